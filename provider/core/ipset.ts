/**
 * Large allowlists on Docker's iptables backend: the sources of a family in one ipset
 * (`hash:net`), matched by one rule of the owned chain, instead of one rule per source.
 *
 * Pure functions only (no I/O). Why and when: every new connection to a policed port walks the
 * chain's rules one by one (about 9 ns per rule per new connection on the lab machine,
 * bench/packet-path.ts), so a linear chain costs more than 1% of a new connection's cost from
 * about 100 rules on, and about half of it at 10,000; a hash lookup costs the same at any size.
 * From {@link SET_THRESHOLD} sources in a family on, that family's sources go into a set:
 *
 *   DPA-web
 *     -m conntrack --ctstate RELATED,ESTABLISHED ... -j RETURN
 *     -i docker0 ... -j RETURN
 *     -m set --match-set dpa4-web src ... -j RETURN        (was: one -s rule per source)
 *     ... -j DROP
 *
 * Guarantees:
 * - Names: `dpa4-<ruleName>` / `dpa6-<ruleName>` (at most 29 characters of ipset's 31); the
 *   temporary set of an update is `dpa4+<ruleName>`, a name no ruleName can produce.
 * - An update never leaves the set half-filled: the new contents are built in the temporary set
 *   and exchanged with the live one by `ipset swap` (atomic), so a packet sees the old list or
 *   the new one. A new set is created and filled before the rule that matches it is written, and
 *   a set is destroyed only after the rule that matched it is gone (see sync.sh). A rollback
 *   builds the set as it was read aside and swaps it back, whatever the apply got to.
 * - Every text is `ipset restore` input run with `-exist` (a destroy of a set that is not there
 *   is not an error), so each one can run again after an interruption with the same result.
 * - The lines shown and checked are those `ipset save` prints, without the parameters it adds
 *   (hashsize, bucketsize, initval; maxelem only past ipset's default size): `create <name>
 *   hash:net family inet|inet6` and one `add <name> <source>` per source, a full-length prefix
 *   printed as a bare address.
 */
import { compareCidr, formatAddress, formatCidr, parseCidr, type Cidr, type Family } from "./ip";
import type { AllowlistSpec } from "./layout";

/**
 * From this many sources in one family on, the family's sources are kept in an ipset. Chosen
 * from bench/packet-path.ts (see the module comment): below it, the linear chain costs under 1%
 * of a new connection and stays readable rule by rule.
 */
export const SET_THRESHOLD = 100;
/** ipset's default `maxelem`; a larger list names its own in the create line. */
export const SET_DEFAULT_MAXELEM = 65536;

const digit = (family: Family) => (family === "ipv4" ? "4" : "6");

/** The live set of `ruleName` in `family`: `dpa4-web`. */
export function setName(ruleName: string, family: Family): string {
  return `dpa${digit(family)}-${ruleName}`;
}

/** The temporary set an update builds and swaps in: `dpa4+web`. */
export function tmpSetName(ruleName: string, family: Family): string {
  return `dpa${digit(family)}+${ruleName}`;
}

/** Both names of `ruleName` in both families, as the host's read lists them. */
export function ownSetNames(ruleName: string): string[] {
  return (["ipv4", "ipv6"] as const).flatMap((f) => [setName(ruleName, f), tmpSetName(ruleName, f)]);
}

/**
 * Whether `spec` keeps `family`'s sources in a set: from {@link SET_THRESHOLD} of them on, unless
 * one is a /0 (everyone; `hash:net` takes no /0, and one rule says it).
 */
export function usesSet(spec: AllowlistSpec, family: Family): boolean {
  const sources = spec.sources[family];
  return sources.length >= SET_THRESHOLD && sources.every((s) => s.prefix > 0);
}

/**
 * Whether `family` of `spec` is kept in a set on a host: where the spec calls for one
 * ({@link usesSet}) and ipset works there (`ipsetWorks`); elsewhere its sources stay rules. The
 * planner and the guard's copy decide by this one rule.
 */
export function keepsSet(spec: AllowlistSpec, family: Family, ipsetWorks: boolean): boolean {
  return ipsetWorks && usesSet(spec, family);
}

/** A source as `ipset save` prints it: a full-length prefix as a bare address. */
export function setElement(source: Cidr): string {
  const full = source.family === "ipv4" ? 32 : 128;
  return source.prefix === full ? formatAddress(source.family, source.address) : formatCidr(source);
}

function createLine(name: string, family: Family, size: number): string {
  const max = size > SET_DEFAULT_MAXELEM ? ` maxelem ${size}` : "";
  return `create ${name} hash:net family ${family === "ipv4" ? "inet" : "inet6"}${max}`;
}

/**
 * The set of `spec` in `family` as `ipset save` prints it (see the module comment): its create
 * line, then one add line per source in the spec's order. Empty when the family has no set.
 */
export function renderSetLines(spec: AllowlistSpec, family: Family): string[] {
  if (!usesSet(spec, family)) return [];
  const name = setName(spec.ruleName, family);
  const sources = [...spec.sources[family]].sort(compareCidr);
  return [createLine(name, family, sources.length), ...sources.map((s) => `add ${name} ${setElement(s)}`)];
}

/** One set as `ipset save` listed it: its create line without parameters, and its elements. */
export interface LiveSet {
  readonly create: string;
  readonly elements: readonly string[];
}

/**
 * `ipset save` output as sets by name. The create line keeps name, type and family (the
 * parameters ipset adds are dropped, see the module comment); elements keep their order.
 */
export function parseIpsetSave(text: string): Map<string, LiveSet> {
  const out = new Map<string, { create: string; elements: string[] }>();
  for (const line of text.split("\n")) {
    const w = line.trim().split(/\s+/);
    if (w[0] === "create" && w.length >= 3) {
      const family = w.indexOf("family");
      const fam = family > 0 && w[family + 1] !== undefined ? ` family ${w[family + 1]}` : "";
      out.set(w[1], { create: `create ${w[1]} ${w[2]}${fam}`, elements: [] });
    } else if (w[0] === "add" && w.length >= 3) {
      out.get(w[1])?.elements.push(w[2]);
    }
  }
  return out;
}

/** Element text in a canonical form (so `10.0.0.1/32` and `10.0.0.1` compare equal). */
function canonicalElement(text: string): string {
  const c = parseCidr(text);
  return c === undefined ? text : setElement(c);
}

/** What one family's sets need: the lines shown, and the four texts sync.sh runs (`ipset -exist restore`). */
export interface SetPlan {
  /** Human change lines, `+ [ipv4] add dpa4-web 198.18.1.7` style (without the family prefix). */
  readonly changes: readonly { sign: "+" | "-"; line: string; note?: string }[];
  /** Before the family's iptables-restore: build (and swap in) the sets the new rules match. */
  readonly apply: string;
  /** After it: destroy the sets no rule matches any more. */
  readonly drop: string;
  /** A rollback, before the family's iptables rollback: the sets as they were read. */
  readonly rollback: string;
  /** A rollback, after the family's iptables rollback: the sets that were not there before. */
  readonly rollbackDrop: string;
}

/** A live set's create line as a rebuild needs it: with its size where ipset's default is too small. */
function sized(set: LiveSet): string {
  const n = set.elements.length;
  return n > SET_DEFAULT_MAXELEM ? `${set.create} maxelem ${n}` : set.create;
}

const text = (lines: readonly string[]) => lines.map((l) => `${l}\n`).join("");

/**
 * Plans the sets of `ruleName` in `family` from the host's `ipset save` of them (`live`) to
 * `want` (the lines {@link renderSetLines} gives; empty: no set). Undefined when nothing changes.
 */
export function planSets(
  live: ReadonlyMap<string, LiveSet>,
  want: readonly string[],
  ruleName: string,
  family: Family,
): SetPlan | undefined {
  const name = setName(ruleName, family);
  const tmp = tmpSetName(ruleName, family);
  const had = live.get(name);
  const leftover = live.get(tmp);
  const changes: { sign: "+" | "-"; line: string; note?: string }[] = [];
  const apply: string[] = [];
  const drop: string[] = [];
  const rollback: string[] = [];
  const rollbackDrop: string[] = [];
  if (leftover !== undefined) {
    changes.push({ sign: "-", line: `destroy ${tmp}`, note: "left by an interrupted run" });
    apply.push(`destroy ${tmp}`);
  }
  if (want.length > 0) {
    const wantElements = want.slice(1).map((l) => l.slice(`add ${name} `.length));
    const haveElements = (had?.elements ?? []).map(canonicalElement);
    const have = new Set(haveElements);
    const wanted = new Set(wantElements);
    const sameCreate = had !== undefined && want[0].startsWith(had.create);
    // A set holds each element once, so equal sizes and inclusion mean equal sets.
    const same = sameCreate && have.size === wanted.size && wantElements.every((e) => have.has(e));
    if (!same || leftover !== undefined) {
      if (had === undefined) {
        changes.push({ sign: "+", line: want[0] });
        for (const e of wantElements) changes.push({ sign: "+", line: `add ${name} ${e}` });
        apply.push(...want);
        rollbackDrop.push(`destroy ${name}`);
      } else if (!same) {
        if (!sameCreate) changes.push({ sign: "-", line: had.create }, { sign: "+", line: want[0] });
        for (const e of haveElements)
          if (!wanted.has(e)) changes.push({ sign: "-", line: `add ${name} ${e}` });
        for (const e of wantElements) if (!have.has(e)) changes.push({ sign: "+", line: `add ${name} ${e}` });
        // Built aside, swapped in at once; the temporary set then holds the old list and goes.
        apply.push(
          `destroy ${tmp}`,
          want[0].replace(`create ${name} `, `create ${tmp} `),
          ...wantElements.map((e) => `add ${tmp} ${e}`),
          `swap ${tmp} ${name}`,
          `destroy ${tmp}`,
        );
      }
      if (had !== undefined) {
        const create = sized(had);
        // Whatever an interrupted apply left: the set as read, built aside and swapped in (created
        // empty first where the apply had gone as far as destroying it).
        rollback.push(
          `destroy ${tmp}`,
          create,
          create.replace(`create ${name} `, `create ${tmp} `),
          ...had.elements.map((e) => `add ${tmp} ${e}`),
          `swap ${tmp} ${name}`,
          `destroy ${tmp}`,
        );
      }
    }
  } else if (had !== undefined) {
    changes.push({ sign: "-", line: `destroy ${name}` });
    drop.push(`destroy ${name}`);
    rollback.push(sized(had), ...had.elements.map((e) => `add ${name} ${e}`));
  }
  if (leftover !== undefined) rollbackDrop.push(`destroy ${tmp}`);
  if (changes.length === 0) return undefined;
  return {
    changes,
    apply: text(apply),
    drop: text(drop),
    rollback: text(rollback),
    rollbackDrop: text(rollbackDrop),
  };
}

/**
 * The set of `ruleName` in `family` as listed in `ipsets` (`ipset save` of the allowlist's sets),
 * in the form and order of {@link renderSetLines}: what a refresh shows of a set that drifted.
 */
export function liveSetLines(ipsets: string | undefined, ruleName: string, family: Family): string[] {
  const name = setName(ruleName, family);
  const set = parseIpsetSave(ipsets ?? "").get(name);
  if (set === undefined) return [];
  const parsed = set.elements.map((e) => ({ e, c: parseCidr(e) }));
  parsed.sort((a, b) =>
    a.c === undefined || b.c === undefined ? a.e.localeCompare(b.e) : compareCidr(a.c, b.c),
  );
  return [sized(set), ...parsed.map((p) => `add ${name} ${p.c === undefined ? p.e : setElement(p.c)}`)];
}
