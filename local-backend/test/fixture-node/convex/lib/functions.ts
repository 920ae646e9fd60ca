/**
 * The typed function builders that `_generated/server.js` would provide,
 * without codegen: the fixture imports `convex/server` directly.
 */
import {
  actionGeneric,
  type ActionBuilder,
  type DataModelFromSchemaDefinition,
  internalMutationGeneric,
  mutationGeneric,
  type MutationBuilder,
  queryGeneric,
  type QueryBuilder,
} from "convex/server";
import type schema from "../schema";

export type DataModel = DataModelFromSchemaDefinition<typeof schema>;

export const query: QueryBuilder<DataModel, "public"> = queryGeneric;
export const mutation: MutationBuilder<DataModel, "public"> = mutationGeneric;
export const internalMutation: MutationBuilder<DataModel, "internal"> =
  internalMutationGeneric;
export const action: ActionBuilder<DataModel, "public"> = actionGeneric;
