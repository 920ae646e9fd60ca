/**
 * The floor for fan-out: a bare `ws` server, in its own process, that on each
 * `{type: "send", frame}` from any client writes that frame to every other
 * client (the benchmark passes the very frame the backend sent in the same
 * round), with no database, no functions and no protocol state. It reports
 * its event-loop stalls and CPU time like `backendProcess.ts` (`loopMonitor.ts`).
 *
 * With a file path as its argument, it is the floor plus one durability
 * wait per round: each frame is broadcast only after a record of
 * RECORD_BYTES is appended to that file and `fdatasync`ed (off the event
 * loop, as the backend's group commit does), so a case's ratio to it shows
 * what is left once the one fsync a round needs is counted.
 */
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";
import { LoopMonitor } from "./loopMonitor.ts";

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  perMessageDeflate: false,
});
const loop = new LoopMonitor();
/** About one commit's WAL frames (a message, its index entries): one page. */
const RECORD_BYTES = 4096;
const durableFile = process.argv[2];
const fd = durableFile === undefined ? null : fs.openSync(durableFile, "a");
const record = Buffer.alloc(RECORD_BYTES, "x");
wss.on("connection", (ws: WebSocket) => {
  ws.on("message", (data: Buffer) => {
    const { frame } = JSON.parse(data.toString("utf8")) as { frame: string };
    const broadcast = () => {
      for (const client of wss.clients) if (client !== ws) client.send(frame);
    };
    if (fd === null) {
      broadcast();
      return;
    }
    fs.write(fd, record, (error) => {
      if (error !== null) throw error;
      fs.fdatasync(fd, (error) => {
        if (error !== null) throw error;
        broadcast();
      });
    });
  });
});
wss.on("listening", () => {
  const { port } = wss.address() as AddressInfo;
  process.send!({ type: "ready", url: `ws://127.0.0.1:${port}` });
});
process.on("message", (message: { type: string }) => {
  if (message.type === "reset") {
    loop.reset();
    process.send!({ type: "reset" });
  } else if (message.type === "stall") {
    process.send!({ type: "stall", ...loop.stall() });
  } else if (message.type === "stop") {
    wss.close(() => process.exit(0));
  }
});
