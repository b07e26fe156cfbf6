// containerd's identifier rule (pkg/identifiers, used for container ids, exec ids and
// namespaces): ids become file names (state files), path components and socket hashes, so every
// entry point checks them with this one rule before it builds a path. The C launcher holds the
// same rule and words its errors the same (launcher/src/identifier.c).
// No imports but errdefs: `start` and `delete` load this on every call.
import { invalidArgument } from '../errdefs';

export const IDENTIFIER_MAX_LENGTH = 76;
/** The pattern as containerd writes it (quoted in every error). */
export const IDENTIFIER_RULE = '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$';
const IDENTIFIER = new RegExp(IDENTIFIER_RULE);

/**
 * Why `value` is not a containerd identifier, as a message naming `what` (e.g. "container id")
 * and the value; undefined when it is one. Checked in containerd's order: empty, length (in
 * bytes, as Go's len), pattern.
 */
export function identifierProblem(what: string, value: string): string | undefined {
  const bytes = Buffer.byteLength(value, 'utf8');
  let reason: string;
  if (bytes === 0) reason = 'it is empty; ';
  else if (bytes > IDENTIFIER_MAX_LENGTH) reason = `it is ${bytes} bytes long; `;
  else if (!IDENTIFIER.test(value)) reason = '';
  else return undefined;
  return `invalid ${what} ${JSON.stringify(value)}: ${reason}containerd identifiers must match ${IDENTIFIER_RULE} with at most ${IDENTIFIER_MAX_LENGTH} characters`;
}

/** Throws InvalidArgument (errdefs code 3) naming `what`, the value and the rule, after
 *  `context: ` when given (the launcher's "start: " and "delete: "). */
export function validateIdentifier(what: string, value: string, context?: string): void {
  const problem = identifierProblem(what, value);
  if (problem !== undefined) throw invalidArgument(context ? `${context}: ${problem}` : problem);
}
