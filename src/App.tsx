import { useState } from "react";
import { useSessionQuery } from "convex-helpers/react/sessions";
import { api } from "../convex/_generated/api";
import type { Id } from "../convex/_generated/dataModel";
import { Account } from "./components/Account";
import { Composer } from "./components/Composer";
import { ConnectionStatus } from "./components/ConnectionStatus";
import { DeleteEverything } from "./components/DeleteEverything";
import { MessageList } from "./components/MessageList";
import { NameField } from "./components/NameField";
import { PairDevice } from "./components/PairDevice";
import { WhoIsHere } from "./components/WhoIsHere";
import { useStartSession } from "./hooks/useStartSession";

export function App() {
  const startError = useStartSession();
  const me = useSessionQuery(api.users.me);
  const [sentId, setSentId] = useState<Id<"messages"> | null>(null);

  return (
    <div className="app">
      <header className="app-header">
        <h1 className="app-title">Chat</h1>
        <NameField me={me} />
        <Account me={me} />
        <ConnectionStatus />
      </header>
      {startError && (
        <p role="alert" className="banner">
          {startError}
        </p>
      )}
      <main className="chat">
        <MessageList sentId={sentId} meId={me?._id ?? null} />
        <Composer onSent={setSentId} />
      </main>
      <footer className="app-footer">
        <WhoIsHere meId={me?._id ?? null} />
        <PairDevice />
        <DeleteEverything />
      </footer>
    </div>
  );
}
