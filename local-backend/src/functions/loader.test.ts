/** Which modules are `"use node"`: the directive prologue, as Babel reads it for the CLI. */
import { expect, test } from "vitest";
import { hasUseNodeDirective } from "./loader.ts";

test("a use node directive counts wherever the prologue has it", () => {
  for (const source of [
    `"use node";\nimport x from "y";`,
    `'use node'\nexport const a = 1;`,
    `// header\n/* block */\n"use node";`,
    `#!/usr/bin/env node\n"use node";`,
    `"use strict";\n"use node";\nexport {};`,
    `"use node" // trailing comment\nexport {};`,
  ])
    expect(hasUseNodeDirective(source), source).toBe(true);
});

test("the words elsewhere are not a directive", () => {
  for (const source of [
    `import x from "y";\n"use node";`,
    `export const mode = "use node";`,
    `"use node".length;`,
    `// "use node"\nexport {};`,
    `"use nodes";`,
    `const a = 1;\n"use node";`,
  ])
    expect(hasUseNodeDirective(source), source).toBe(false);
});
