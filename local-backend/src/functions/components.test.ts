import { describe, expect, test } from "vitest";
import {
  baseTableName,
  componentOfTable,
  type ComponentDefinition,
  createComponentTree,
  internalTableName,
  localTableName,
  type RuntimeDefinition,
} from "./components.ts";

const query = (isPublic: boolean) => ({
  isQuery: true,
  isPublic,
  isInternal: !isPublic,
});

function definition(
  name: string,
  children: [string, string, RuntimeDefinition][] = [],
): RuntimeDefinition {
  return {
    _name: name,
    _childComponents: children.map(([childName, path, child]) => [
      childName,
      {
        componentDefinitionPath: path,
        defaultName: child._name!,
        definition: child,
      },
      {},
      undefined,
    ]),
    export: () => ({}),
  };
}

function tree() {
  const tally = definition("tally");
  const notes = definition("notes", [["tally", "tally", tally]]);
  const app = definition("", [
    ["notes", "notes", notes],
    ["archive", "notes", notes],
  ]);
  const definitions: Record<string, ComponentDefinition> = {
    "": { modules: { app: { f: query(true) } }, schema: null },
    notes: {
      modules: { "dir/lib": { list: query(true), secret: query(false) } },
      schema: {
        schemaValidation: true,
        tables: [
          {
            tableName: "notes",
            indexes: [],
            documentType: {
              type: "object",
              value: {
                parent: {
                  fieldType: { type: "id", tableName: "notes" },
                  optional: true,
                },
              },
            },
          },
        ],
      },
    },
    tally: { modules: { lib: { get: query(true) } }, schema: null },
  };
  return createComponentTree(app, definitions);
}

describe("component namespaces", () => {
  test("a component's tables get names no app table can have; the app's keep theirs", () => {
    expect(internalTableName("", "notes")).toBe("notes");
    expect(internalTableName("notes/tally", "counts")).toBe(
      "counts@notes/tally",
    );
    expect(localTableName("notes/tally", "counts@notes/tally")).toBe("counts");
    expect(localTableName("notes", "counts@notes/tally")).toBeNull();
    expect(localTableName("", "counts@notes/tally")).toBeNull();
    expect(localTableName("notes", "notes")).toBeNull();
    expect(() => internalTableName("", "counts@notes")).toThrow(
      'Invalid table name: "counts@notes"',
    );
    expect(componentOfTable("_scheduled_functions@notes")).toBe("notes");
    expect(baseTableName("_scheduled_functions@notes")).toBe(
      "_scheduled_functions",
    );
  });

  test("instances are named by their path from the app", () => {
    expect([...tree().instances()].map((c) => c.path)).toEqual([
      "",
      "notes",
      "notes/tally",
      "archive",
      "archive/tally",
    ]);
  });

  test("the merged schema names component tables and the IDs inside them", () => {
    const tables = tree().mergedSchema()!.tables;
    const notes = tables.find((t) => t.tableName === "notes@archive")!;
    expect(JSON.stringify(notes.documentType)).toContain(
      '"tableName":"notes@archive"',
    );
    expect(tables.map((t) => t.tableName)).toContain(
      "_scheduled_functions@archive/tally",
    );
  });
});

describe("function addresses", () => {
  test("a reference names a public function of a child of the caller", () => {
    const components = tree();
    expect(
      components.resolveAddress("", {
        reference: "_reference/childComponent/archive/dir/lib/list",
      }),
    ).toEqual({
      componentPath: "archive",
      udfPath: "dir/lib:list",
      viaReference: true,
    });
    expect(
      components.resolveAddress("notes", {
        reference: "_reference/childComponent/tally/lib/get",
      }).componentPath,
    ).toBe("notes/tally");
    expect(() =>
      components.resolveAddress("", {
        reference: "_reference/childComponent/notes/dir/lib/secret",
      }),
    ).toThrow('Child component "notes" does not export ["dir","lib","secret"]');
    // A grandchild is not the app's to call.
    expect(() =>
      components.resolveAddress("", {
        reference: "_reference/childComponent/tally/lib/get",
      }),
    ).toThrow('Child component "tally" not found');
  });

  test("a handle is stable for its function and resolves anywhere; others are refused", () => {
    const handle = tree().functionHandle({
      componentPath: "notes",
      udfPath: "dir/lib:secret",
    });
    expect(handle).toMatch(/^function:\/\/[0-9a-z]{32}$/);
    // Another build of the same app resolves it: handles survive reloads and restarts.
    const rebuilt = tree();
    expect(rebuilt.resolveHandle(handle)).toEqual({
      componentPath: "notes",
      udfPath: "dir/lib:secret",
    });
    expect(
      rebuilt.functionHandle({
        componentPath: "archive",
        udfPath: "dir/lib:secret",
      }),
    ).not.toBe(handle);
    const gone = rebuilt.functionHandle({
      componentPath: "notes",
      udfPath: "dir/lib:gone",
    });
    expect(() => rebuilt.resolveHandle(gone)).toThrow(
      "Function handle not found",
    );
    expect(() => rebuilt.resolveHandle("function://nope")).toThrow(
      "Invalid function handle function://nope",
    );
  });
});
