/**
 * Text that came from a host, on its way to a person: what a host prints may contain anything,
 * and a message must not let it rewrite the operator's terminal (clear the screen, move the
 * cursor, set the window title, fake a "success" line over an error).
 *
 * Pure functions only. Guarantees:
 * - {@link printable} keeps every printable character, `\n` and `\t`, and drops the rest: C0
 *   controls (including `\r`), DEL, C1 controls, and whole ANSI escape sequences (CSI, OSC,
 *   DCS/SOS/PM/APC strings, two-character escapes), in their 7-bit and 8-bit forms, so no
 *   parameter bytes of a dropped sequence are left behind as visible garbage. Idempotent.
 * - {@link hostText} reads a host's *byte string* (see below) as the UTF-8 it normally is, then
 *   applies {@link printable}. Invalid UTF-8 shows as U+FFFD in the message only; the byte
 *   string itself, which the fingerprint hashes and the rollback replays, is never changed.
 *
 * Byte strings: the SSH edge hands the host's stdout to the core as a latin1 "byte string", one
 * character per byte (U+0000..U+00FF), because it is the only decoding that loses nothing: a
 * foreign rule's comment that is not valid UTF-8 must hash to what the host hashes
 * (./fingerprint.ts) and must go back into a rollback byte for byte.
 */

/**
 * An ANSI escape sequence (ECMA-48), 7-bit (ESC-introduced) or 8-bit (C1-introduced):
 * CSI `ESC [` / 0x9B params... final; OSC/DCS/SOS/PM/APC strings up to BEL or ST (or the end);
 * any other escape as ESC plus one character.
 */
const ESCAPE = new RegExp(
  [
    "(?:\\x1b\\[|\\x9b)[\\x30-\\x3f]*[\\x20-\\x2f]*[\\x40-\\x7e]?",
    "(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d\\x9e\\x9f])[^\\x07\\x1b\\x9c]*(?:\\x07|\\x1b\\\\|\\x9c)?",
    "\\x1b[\\s\\S]?",
  ].join("|"),
  "g",
);

/** Every control character left once escape sequences are gone, except `\n` and `\t`. */
// eslint-disable-next-line no-control-regex -- matching control characters is its purpose
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/** `text` with control characters and escape sequences removed (see the module header). */
export function printable(text: string): string {
  return text.replace(ESCAPE, "").replace(CONTROL, "");
}

/**
 * A host's byte string (or any text) as a person may see it: decoded as UTF-8 when it is a byte
 * string, then {@link printable}. Text with characters beyond U+00FF is not a byte string and is
 * only made printable.
 */
export function hostText(text: string): string {
  // eslint-disable-next-line no-control-regex
  const decoded = /[^\x00-\xff]/.test(text) ? text : Buffer.from(text, "latin1").toString("utf8");
  return printable(decoded);
}

/**
 * The bytes a byte string stands for. Throws for a character beyond U+00FF: such text did not
 * come from a host and would silently lose bits as latin1.
 */
export function bytesOf(text: string): Buffer {
  // eslint-disable-next-line no-control-regex
  const bad = /[^\x00-\xff]/.exec(text);
  if (bad !== null) {
    throw new Error(
      `text for the host contains ${JSON.stringify(bad[0])} (U+${bad[0].codePointAt(0)!.toString(16).toUpperCase()}), ` +
        `which is not a byte: everything sent to a host is ASCII or bytes the host printed.`,
    );
  }
  return Buffer.from(text, "latin1");
}
