/**
 * Pacing of an operation's progress lines on the provider's stderr, which the engine shows live
 * under the stack during `pulumi up` (and keeps in its diagnostics). A fleet of quick operations
 * must stay quiet, and a stuck one must not go silent:
 * - a wait (a failed dial, a held host lock) is shown at once, then at most one line per `everyMs`;
 * - a phase of the work is shown only once the operation has run for `quietMs`, and then at most
 *   one line per `everyMs`, so a normal write prints nothing.
 * Time is injected, so the rules are tested without waiting.
 */
import type { ProgressKind } from "../host/exec";

export interface PacerOptions {
  /** Where a line goes. */
  readonly write: (line: string) => void;
  /** @default Date.now */
  readonly now?: () => number;
  /** Least time between two lines, in ms. @default 3000 */
  readonly everyMs?: number;
  /** How long an operation runs before its phases are shown, in ms. @default 3000 */
  readonly quietMs?: number;
}

/** Returns the `progress` sink of one operation; `prefix` names the resource and operation. */
export function pacedProgress(
  prefix: string,
  o: PacerOptions,
): (message: string, kind: ProgressKind) => void {
  const now = o.now ?? Date.now;
  const everyMs = o.everyMs ?? 3000;
  const quietMs = o.quietMs ?? 3000;
  const started = now();
  let last: number | undefined;
  return (message, kind) => {
    const t = now();
    if (kind === "phase" && t - started < quietMs) return;
    if (last !== undefined && t - last < everyMs) return;
    last = t;
    o.write(`${prefix}: ${message}\n`);
  };
}
