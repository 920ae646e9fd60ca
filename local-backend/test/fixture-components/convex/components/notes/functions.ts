/** This component's builders, typed by its own schema (what `_generated/server` holds). */
import {
  type DataModelFromSchemaDefinition,
  internalQueryGeneric,
  mutationGeneric,
  type MutationBuilder,
  type QueryBuilder,
  queryGeneric,
} from "convex/server";
import type schema from "./schema.ts";

type DataModel = DataModelFromSchemaDefinition<typeof schema>;

export const query: QueryBuilder<DataModel, "public"> = queryGeneric;
export const internalQuery: QueryBuilder<DataModel, "internal"> =
  internalQueryGeneric;
export const mutation: MutationBuilder<DataModel, "public"> = mutationGeneric;
