/**
 * Components: the tree of component instances an app's `convex.config.ts`
 * installs, their namespaces, and how a function address (`{name}`,
 * `{reference}`, `{functionHandle}`) resolves to one function of one instance.
 *
 * An instance is named by its component path, as Convex names it in logs and
 * errors: "" for the app, "rateLimiter", "presence/batchWorker" (convex-backend
 * `ComponentPath`). Each instance runs the modules of its definition
 * directory; two instances of one definition share those module objects (one
 * bundle), but every call carries its instance's path, so what they read and
 * write is their own.
 *
 * Tables: a component's table `sessions` is stored under the internal name
 * `sessions@presence`, which no app table can have ("@" is not allowed in a
 * table name), so names and table numbers never collide with the app's or
 * another instance's. The storage layer sees ordinary tables; only the syscall
 * layer maps names, through `internalTableName` / `localTableName`. A system
 * table keeps its leading "_" (`_scheduled_functions@presence`), so the
 * transaction's system-table rules still apply.
 *
 * Usage:
 *   const tree = createComponentTree(app, definitions);
 *   const target = tree.resolveAddress(callerPath, { reference: "_reference/childComponent/x/lib/f" });
 *   tree.internalTableName("presence", "sessions"); // "sessions@presence"
 */
import { createHash } from "node:crypto";
import type { ValidatorJSON } from "convex/values";
import type { SchemaJson } from "../storage/database.ts";
import { encodeId, decodeId, INTERNAL_ID_LENGTH } from "../values/ids.ts";
import type { ModuleExports, RegisteredFunction } from "./isolate.ts";

/** The app itself, convex-backend `ComponentPath::root()`. */
export const ROOT_COMPONENT = "";

/**
 * Function handles are `function://` + a document ID (convex-backend
 * `FunctionHandle`, an ID of the `_function_handles` system table). Ours are
 * derived from the function's component path and name, so a handle stays
 * valid across reloads and restarts without being stored, as Convex's do.
 * The table number is reserved for them and never holds documents.
 */
const FUNCTION_HANDLE_PREFIX = "function://";
const FUNCTION_HANDLES_TABLE_NUMBER = 9_999;
const REFERENCE_PREFIX = "_reference/childComponent/";
const NAMESPACE_SEPARATOR = "@";

/** One evaluated component definition: its modules and schema (the app is ""). */
export type ComponentDefinition = {
  modules: Record<string, ModuleExports>;
  schema: SchemaJson | null;
};

/**
 * The runtime shape of `defineApp()` / `defineComponent()` objects in convex
 * 1.48 (`server/components/index.ts`): `use()` appends
 * `[name, importedDefinition, env, httpPrefix]` to `_childComponents`. The
 * loader makes every imported `convex.config` default export an
 * `ImportedDefinition` that also carries the definition it stands for.
 */
export type RuntimeDefinition = {
  _name?: string;
  /** convex 1.48 `exportAppForAnalysis` / `exportComponentForAnalysis`: what a push sends. */
  export(): unknown;
  _childComponents: [
    string,
    ImportedDefinition,
    Record<string, unknown> | null,
    string | undefined,
  ][];
};
export type ImportedDefinition = {
  componentDefinitionPath: string;
  defaultName: string;
  definition: RuntimeDefinition;
};

export type ComponentInstance = {
  /** "" for the app, else the names from the app down, joined by "/". */
  path: string;
  definitionPath: string;
  /** What `convex.config` exported (null for an app without one). */
  definition: RuntimeDefinition | null;
  modules: Record<string, ModuleExports>;
  schema: SchemaJson | null;
  /** Environment values its parent passed in `use(component, { env })`. */
  env: Record<string, string>;
  children: Map<string, ComponentInstance>;
};

/** A function of one component instance. */
export type ComponentFunctionPath = { componentPath: string; udfPath: string };

/** How `runQuery` / `runMutation` / `scheduler` / `createFunctionHandle` name a function. */
export type FunctionAddress =
  { name: string } | { reference: string } | { functionHandle: string };

export class ComponentError extends Error {}

export class ComponentTree {
  readonly root: ComponentInstance;
  readonly #byPath = new Map<string, ComponentInstance>();
  /** Handle internal IDs (hex) → function, filled on first use of a handle. */
  #handles: Map<string, ComponentFunctionPath> | null = null;

  constructor(root: ComponentInstance) {
    this.root = root;
    const visit = (instance: ComponentInstance) => {
      this.#byPath.set(instance.path, instance);
      for (const child of instance.children.values()) visit(child);
    };
    visit(root);
  }

  get(componentPath: string): ComponentInstance | undefined {
    return this.#byPath.get(componentPath);
  }

  instances(): IterableIterator<ComponentInstance> {
    return this.#byPath.values();
  }

  /**
   * The function an address names, seen from a function of `callerPath`: a
   * name is in the caller's own component, a reference in one of its children
   * (convex-backend `ComponentsModel::resolve`), a handle anywhere.
   */
  resolveAddress(
    callerPath: string,
    address: FunctionAddress,
  ): ComponentFunctionPath & { viaReference: boolean } {
    if ("name" in address) {
      return {
        componentPath: callerPath,
        udfPath: address.name,
        viaReference: false,
      };
    }
    if ("reference" in address) {
      return {
        ...this.#resolveReference(callerPath, address.reference),
        viaReference: true,
      };
    }
    return {
      ...this.resolveHandle(address.functionHandle),
      viaReference: false,
    };
  }

  #resolveReference(
    callerPath: string,
    reference: string,
  ): ComponentFunctionPath {
    if (!reference.startsWith(REFERENCE_PREFIX)) {
      throw new ComponentError(
        `Invalid reference ${JSON.stringify(reference)}`,
      );
    }
    const [childName, ...attributes] = reference
      .slice(REFERENCE_PREFIX.length)
      .split("/");
    const caller = this.#byPath.get(callerPath);
    const child = caller?.children.get(childName);
    if (child === undefined) {
      throw new ComponentError(
        `Child component ${JSON.stringify(childName)} not found`,
      );
    }
    // A child exports its public functions, "dir/file:fn" as dir.file.fn.
    const fnName = attributes.at(-1);
    const module = attributes.slice(0, -1).join("/");
    const fn =
      fnName === undefined || module === ""
        ? undefined
        : (child.modules[module]?.[fnName] as RegisteredFunction | undefined);
    if (fn === undefined || fn === null || fn.isPublic !== true) {
      throw new ComponentError(
        `Child component ${JSON.stringify(childName)} does not export ${JSON.stringify(attributes)}`,
      );
    }
    return { componentPath: child.path, udfPath: `${module}:${fnName}` };
  }

  /** `createFunctionHandle`: the handle of a function that exists. */
  functionHandle(target: ComponentFunctionPath): string {
    return `${FUNCTION_HANDLE_PREFIX}${encodeId(
      FUNCTION_HANDLES_TABLE_NUMBER,
      handleInternalId(target),
    )}`;
  }

  resolveHandle(handle: string): ComponentFunctionPath {
    const decoded = handle.startsWith(FUNCTION_HANDLE_PREFIX)
      ? decodeId(handle.slice(FUNCTION_HANDLE_PREFIX.length))
      : null;
    if (
      decoded === null ||
      decoded.tableNumber !== FUNCTION_HANDLES_TABLE_NUMBER
    ) {
      throw new ComponentError(`Invalid function handle ${handle}`);
    }
    this.#handles ??= this.#allHandles();
    const target = this.#handles.get(
      Buffer.from(decoded.internalId).toString("hex"),
    );
    // convex-backend `function_handle_not_found()`.
    if (target === undefined)
      throw new ComponentError("Function handle not found");
    return target;
  }

  #allHandles(): Map<string, ComponentFunctionPath> {
    const handles = new Map<string, ComponentFunctionPath>();
    for (const instance of this.#byPath.values()) {
      for (const [module, exports] of Object.entries(instance.modules)) {
        for (const [name, value] of Object.entries(exports)) {
          const fn = value as RegisteredFunction | null;
          if (
            fn === null ||
            (typeof fn !== "object" && typeof fn !== "function")
          )
            continue;
          if (
            fn.isQuery !== true &&
            fn.isMutation !== true &&
            fn.isAction !== true
          )
            continue;
          const target = {
            componentPath: instance.path,
            udfPath: `${module}:${name}`,
          };
          handles.set(
            Buffer.from(handleInternalId(target)).toString("hex"),
            target,
          );
        }
      }
    }
    return handles;
  }

  /**
   * One schema for the database: the app's tables as they are, and every
   * component's under its internal names, with `v.id("t")` inside rewritten to
   * the same names so that document validation checks the right table.
   */
  mergedSchema(): SchemaJson | null {
    const components = [...this.#byPath.values()].filter(
      (c) => c.path !== ROOT_COMPONENT && c.schema !== null,
    );
    if (components.length === 0) return this.root.schema;
    const tables = [...(this.root.schema?.tables ?? [])];
    for (const component of components) {
      for (const table of component.schema!.tables) {
        tables.push({
          ...table,
          tableName: internalTableName(component.path, table.tableName),
          documentType: namespaceIds(table.documentType, component.path),
        });
      }
    }
    return {
      tables,
      schemaValidation: this.root.schema?.schemaValidation ?? true,
    };
  }
}

/** The instance tree of an app: `app` is its `convex.config` default export, or null without one. */
export function createComponentTree(
  app: RuntimeDefinition | null,
  definitions: Record<string, ComponentDefinition>,
): ComponentTree {
  const instantiate = (
    path: string,
    definitionPath: string,
    definition: RuntimeDefinition | null,
    env: Record<string, string>,
  ): ComponentInstance => {
    const evaluated = definitions[definitionPath];
    if (evaluated === undefined) {
      throw new ComponentError(
        `Component definition ${definitionPath} was not bundled`,
      );
    }
    const children = new Map<string, ComponentInstance>();
    for (const [name, imported, childEnv] of definition?._childComponents ??
      []) {
      if (children.has(name)) {
        throw new ComponentError(
          `Component name "${name}" is used twice in ${path === ROOT_COMPONENT ? "the app" : `component "${path}"`}; pass a distinct { name }`,
        );
      }
      const values: Record<string, string> = {};
      for (const [key, value] of Object.entries(childEnv ?? {})) {
        if (typeof value === "string") values[key] = value;
      }
      children.set(
        name,
        instantiate(
          path === ROOT_COMPONENT ? name : `${path}/${name}`,
          imported.componentDefinitionPath,
          imported.definition,
          values,
        ),
      );
    }
    return {
      path,
      definitionPath,
      definition,
      modules: evaluated.modules,
      schema: evaluated.schema,
      env,
      children,
    };
  };
  return new ComponentTree(instantiate(ROOT_COMPONENT, "", app, {}));
}

/** The name the database knows a component's table by; the app's tables keep theirs. */
export function internalTableName(
  componentPath: string,
  tableName: string,
): string {
  // Names with "@" would reach into another namespace; Convex's table names
  // are identifiers, so it refuses them too.
  if (tableName.includes(NAMESPACE_SEPARATOR)) {
    throw new ComponentError(`Invalid table name: "${tableName}"`);
  }
  if (componentPath === ROOT_COMPONENT) return tableName;
  return `${tableName}${NAMESPACE_SEPARATOR}${componentPath}`;
}

/** A table's name as a function of `componentPath` knows it, or null if it is not that component's. */
export function localTableName(
  componentPath: string,
  internalName: string,
): string | null {
  const at = internalName.indexOf(NAMESPACE_SEPARATOR);
  if (componentPath === ROOT_COMPONENT) return at === -1 ? internalName : null;
  return at !== -1 && internalName.slice(at + 1) === componentPath
    ? internalName.slice(0, at)
    : null;
}

/** `{type: "id", tableName}` anywhere in a validator, renamed into `componentPath`'s namespace. */
function namespaceIds(
  validator: ValidatorJSON,
  componentPath: string,
): ValidatorJSON {
  const rename = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(rename);
    if (node === null || typeof node !== "object") return node;
    const record = node as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(record)) out[key] = rename(value);
    if (record.type === "id" && typeof record.tableName === "string") {
      out.tableName = internalTableName(componentPath, record.tableName);
    }
    return out;
  };
  return rename(validator) as ValidatorJSON;
}

function handleInternalId(target: ComponentFunctionPath): Uint8Array {
  return createHash("sha256")
    .update(`${target.componentPath}\u0000${target.udfPath}`)
    .digest()
    .subarray(0, INTERNAL_ID_LENGTH);
}
