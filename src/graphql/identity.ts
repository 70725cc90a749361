// What makes two GraphQL requests "the same" for the points saver: the same document once
// normalized (parsed and printed by graphql-js, so whitespace and comments do not count), the
// same operation run and the same variables as canonical JSON (object keys sorted). The
// operationName counts only where it picks one of several operations: with one operation in the
// document, the request runs it whether operationName names it or is left out. The caller adds
// what else must match (path, credential set, answer-changing headers).
import { Kind, parse, print, type DocumentNode, type OperationDefinitionNode } from 'graphql';

export type OperationType = 'query' | 'mutation' | 'subscription';

export interface GraphqlRequest {
  /** The normalized document. */
  document: string;
  /** As the client sent it (sent upstream and logged as it came). */
  operationName?: string;
  /** The document holds more than one operation: only then does operationName change what runs. */
  severalOperations: boolean;
  /** Canonical JSON of the variables ("{}" when none). */
  variables: string;
  /** The type of the operation that would run (the named one, or the only one). */
  operation: OperationType;
}

/** A document larger than this is not worth normalizing: it is passed through as it is. */
export const MAX_DOCUMENT_CHARS = 256 * 1024;

/** JSON with object keys sorted at every depth: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.keys(value)
    .sort()
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

function selectedOperation(operations: OperationDefinitionNode[], operationName: string | undefined): OperationDefinitionNode | undefined {
  if (operationName === undefined) return operations.length === 1 ? operations[0] : undefined;
  return operations.find((o) => o.name?.value === operationName);
}

/**
 * The identity parts of a `{query, operationName, variables}` object, or undefined when it is not
 * a GraphQL request that can run as it is (not an object, no query, a syntax error, no such
 * operation, variables that are not an object): such requests are never shared.
 */
export function graphqlRequest(payload: unknown): GraphqlRequest | undefined {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return undefined;
  const { query, operationName, variables } = payload as Record<string, unknown>;
  if (typeof query !== 'string' || query.length === 0 || query.length > MAX_DOCUMENT_CHARS) return undefined;
  if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') return undefined;
  if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) return undefined;
  let doc: DocumentNode;
  try {
    doc = parse(query, { noLocation: true });
  } catch {
    return undefined;
  }
  const name = operationName ?? undefined;
  const operations = doc.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const op = selectedOperation(operations, name);
  if (!op) return undefined;
  return {
    document: print(doc),
    ...(name !== undefined && { operationName: name }),
    severalOperations: operations.length > 1,
    variables: canonicalJson(variables ?? {}),
    operation: op.operation as OperationType,
  };
}

/** One string for a request's identity parts (the caller prefixes its own parts). */
export function identityKey(request: GraphqlRequest): string {
  const picked = request.severalOperations ? request.operationName : '';
  return `${picked}\n${request.variables}\n${request.document}`;
}
