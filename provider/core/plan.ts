/**
 * Planner: (live filter tables, desired allowlist) -> the change, as human lines and as one
 * `iptables-restore --noflush` payload per family.
 *
 * Pure functions only (no I/O). Guarantees (each proved by test/core/plan.property.test.ts):
 * - Idempotent: planning against the state a plan produces yields no change (`inSync`).
 * - Foreign rules (no `dpa:<ruleName>` tag, outside our chain) are never deleted or rewritten;
 *   the only foreign-chain edits are inserting our own tagged jumps (DOCKER-USER, INPUT, FORWARD).
 * - Two paths to a published port are policed by the same chain: DOCKER-USER (DNATed traffic,
 *   FORWARD) and INPUT (what docker-proxy serves on the host's own sockets, e.g. IPv6 clients of
 *   IPv4-only containers). Our jumps sit above every foreign rule in both chains.
 * - Order and duplicates in the declared sources do not change the plan.
 * - One transaction per family: the payload is applied by one `iptables-restore --noflush`, so
 *   a host is never left half-changed. DOCKER-USER and INPUT rules are deleted by position
 *   (descending), which cannot hit the wrong rule because the apply step first checks the
 *   fingerprint.
 * - Deleting an allowlist (desired null) leaves DOCKER-USER and INPUT as they would be without
 *   it and removes our chain. A DOCKER-USER we created in ip6tables (Docker 20.10 makes none) is removed
 *   too, with our FORWARD jump, once no rule is left in it and nothing else refers to it.
 */
import { conntrackPolicyOf } from "./conntrack";
import { fingerprint } from "./fingerprint";
import { finding, tool, type Finding } from "./findings";
import type { Family } from "./ip";
import {
  CHAIN_PREFIX,
  DOCKER_USER,
  FORWARD_TAG,
  INPUT,
  TAG_PREFIX,
  chainName,
  originalDestinationText,
  declaresFamily,
  renderChainRules,
  renderForwardJump,
  renderInputJump,
  renderInputJumps,
  renderJump,
  renderJumps,
  tagOf,
  type AllowlistSpec,
  type Protocol,
} from "./layout";
import {
  dockerBridges,
  getChain,
  hasDockerChains,
  isDpaComment,
  isForwardJump,
  parseFilterTable,
  parseRuleCommand,
  type ChainModel,
  type FilterTable,
  type ParsedRule,
} from "./parse";
import { parseOwnerComment, stackOf, standing, type Claim, type Owner } from "./owner";
import { RestoreBuilder } from "./restore";
import { nftClaim, nftTableOwner, nftTableRef, planNft, type NftLive, type NftPlan } from "./nft";
import {
  SET_THRESHOLD,
  keepsSet,
  parseIpsetSave,
  planSets,
  renderSetLines,
  usesSet,
  type LiveSet,
  type SetPlan,
} from "./ipset";

export interface FamilyPlan {
  /** Input for `iptables-restore --noflush` (or ip6tables-restore): one transaction. */
  readonly payload: string;
  /** {@link fingerprint} of the live text this plan was computed from. */
  readonly fingerprint: string;
  /** The lines of ours that must be present afterwards (jumps, then chain), as iptables-save prints them. */
  readonly expected: string[];
  /** Human-readable change lines of this family (see {@link Plan.changes}). */
  readonly changes: string[];
  /**
   * The conntrack cut policy once the payload is applied, as lines for the host's CUT_AWK
   * (see `conntrackPolicyOf` in ./conntrack.ts); empty when nothing is to be cut (a delete).
   */
  readonly conntrack: readonly string[];
  /** The family's ipset change (./ipset.ts), run around the payload by sync.sh; none: undefined. */
  readonly sets?: SetPlan;
}

/** Which firewall Docker runs on the host, so which one the allowlist is written to. */
export type FirewallBackend = "iptables" | "nftables";

/**
 * A host's state as read: each family's `iptables-save -t filter` (null: none), and where nft
 * exists our nftables table and Docker's use of nftables.
 */
export interface LiveState {
  readonly ipv4: string | null;
  readonly ipv6: string | null;
  /**
   * `ipset save` of this allowlist's sets (./ipset.ts; "" when it has none); undefined where the
   * host has no ipset, so every family stays a linear chain.
   */
  readonly ipsets?: string;
  readonly nft?: NftLive & {
    /** Docker runs its nftables firewall backend (its `docker-bridges` tables exist). */
    readonly dockerNftables: boolean;
  };
}

/**
 * Docker's nftables backend: its tables exist and iptables has no DOCKER-USER. Everything else
 * (Docker's iptables backend, or no Docker at all, which the iptables path refuses with its fix)
 * is iptables.
 */
export function firewallBackendOf(live: LiveState): FirewallBackend {
  const dockerUser = live.ipv4 !== null && /^:DOCKER-USER /m.test(live.ipv4);
  return live.nft?.dockerNftables === true && !dockerUser ? "nftables" : "iptables";
}

export interface Plan {
  /** Nothing to change and nothing blocking: the host is as declared. */
  readonly inSync: boolean;
  /** Where the allowlist lives on this host (see {@link firewallBackendOf}). */
  readonly backend: FirewallBackend;
  /** An error finding prevents applying (e.g. no DOCKER-USER); `families` is then empty. */
  readonly blocked: boolean;
  /**
   * Human lines, family first: `+ [ipv4] -A DPA-web -s 198.18.1.0/24 ...` (added),
   * `- [ipv4] -A ...` (removed), `~ [ipv4] -A ... (moved to the top of DOCKER-USER)`.
   */
  readonly changes: string[];
  readonly findings: Finding[];
  /** Only families with something to change. */
  readonly families: { readonly ipv4?: FamilyPlan; readonly ipv6?: FamilyPlan };
  /** Our nftables table's change, when there is one (./nft.ts). */
  readonly nft?: NftPlan & {
    /** Conntrack cut policy lines after the apply, both families (see {@link FamilyPlan.conntrack}). */
    readonly conntrack: readonly string[];
  };
  /** nftables hosts: the lines our table must list (empty: none); see ./nft.ts. */
  readonly nftExpected: readonly string[];
}

interface FamilyResult {
  changes: string[];
  findings: Finding[];
  blocked: boolean;
  plan?: FamilyPlan;
}

/**
 * Which paths of `family` this allowlist polices on this host; pushes findings where it cannot.
 * `forward`: DOCKER-USER (Docker manages the family's iptables); `input`: INPUT, where docker-proxy
 * serves the port on the host's own sockets (wherever the family's iptables works at all).
 */
function policed(
  table: FilterTable | null,
  desired: AllowlistSpec | null,
  family: Family,
  findings: Finding[],
): { forward: boolean; input: boolean; blocked: boolean } {
  const none = { forward: false, input: false, blocked: false };
  if (desired === null) return none;
  if (!declaresFamily(desired, family)) {
    // ipv6 "off" (an original destination of IPv4 binds docker-proxy to that address only).
    if (family === "ipv6" && table !== null && desired.originalDestination === undefined) {
      findings.push(
        finding(
          "proxy-path-unpoliced",
          "warning",
          family,
          `ipv6 is "off", but this host has ip6tables: with Docker's userland proxy (the default), docker-proxy also serves port ${portText(desired)} on the host's IPv6 addresses, and IPv6 clients reach the container that way without passing this allowlist. Fix: set ipv6 to "auto" (IPv6 clients not in sources are then kept out), or run dockerd with "userland-proxy": false.`,
        ),
      );
    }
    return none;
  }
  if (family === "ipv4") {
    if (table === null) {
      findings.push(
        finding(
          "iptables-unavailable",
          "error",
          family,
          `No iptables-save output for IPv4 on this host: iptables is not installed or not allowed for this user. Fix: install iptables, or connect as root or with sudo.`,
        ),
      );
      return { ...none, blocked: true };
    }
    return { forward: true, input: true, blocked: false };
  }
  if (table === null) {
    if (desired.ipv6 === "on") {
      findings.push(
        finding(
          "ipv6-unavailable",
          "error",
          family,
          `ipv6 is "on" but this host gave no ip6tables-save output. Fix: install ip6tables (or connect as a user allowed to run it), or set ipv6 to "auto" or "off".`,
        ),
      );
      return { ...none, blocked: true };
    }
    return none; // no ip6tables: no IPv6 path to police
  }
  // Without Docker's IPv6 chains, containers are IPv4-only and IPv6 reaches them only through
  // docker-proxy: the INPUT path alone covers it.
  return { forward: hasDockerChains(table), input: true, blocked: false };
}

function portText(spec: AllowlistSpec): string {
  const { from, to } = spec.ports;
  return `${from === to ? from : `${from}-${to}`}/${spec.protocols.join(",")}`;
}

function prefix(sign: "+" | "-" | "~", family: Family, line: string, note?: string): string {
  return `${sign} [${family}] ${line}${note === undefined ? "" : ` (${note})`}`;
}

/** Multiset difference a - b, keeping a's order. */
function minus(a: readonly string[], b: readonly string[]): string[] {
  const counts = new Map<string, number>();
  for (const x of b) counts.set(x, (counts.get(x) ?? 0) + 1);
  const out: string[] = [];
  for (const x of a) {
    const n = counts.get(x) ?? 0;
    if (n > 0) counts.set(x, n - 1);
    else out.push(x);
  }
  return out;
}

function sameSequence(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The rule text of one of our rendered `-A CHAIN ...` lines, for `-I` lines. */
function ruleSpec(rendered: string): string {
  return parseRuleCommand(rendered)!.spec;
}

/** Our jumps in one chain (DOCKER-USER or INPUT): which to delete and insert at the top. */
interface Placement {
  readonly deletes: ParsedRule[];
  readonly inserts: string[];
  /**
   * Jumps in place that share their text with a copy in `deletes`: the payload deletes by text
   * (`-D CHAIN <rule>` removes the first rule with that text), so it deletes them too and
   * inserts them again; the chain ends the same as if only the extra copy had gone.
   */
  readonly readds: ParsedRule[];
}

/**
 * Keeps `want` (rendered jumps of ours) at the top of `rules` (a chain we share with others):
 * above every rule that is not some allowlist's, so allowlists never fight over position 1.
 * Jumps in place stay; misplaced ones are moved back (finding `foreign-rule-precedes-jump`),
 * missing ones inserted, stale, duplicate and damaged ones of ours deleted. Foreign rules are
 * never touched.
 */
function placeJumps(
  chainLabel: string,
  rules: readonly ParsedRule[],
  want: readonly string[],
  tag: string,
  isOurShape: (r: ParsedRule) => boolean,
  family: Family,
  changes: string[],
  findings: Finding[],
): Placement {
  const t = tool(family);
  let leading = 0;
  while (leading < rules.length && isDpaComment(rules[leading].comment)) leading++;
  const remaining = new Map<string, number>();
  for (const j of want) remaining.set(j, (remaining.get(j) ?? 0) + 1);
  const deletes: ParsedRule[] = [];
  const reinsert: string[] = [];
  for (const r of rules) {
    if (r.comment !== tag) continue;
    const left = remaining.get(r.canonical) ?? 0;
    if (left > 0) {
      remaining.set(r.canonical, left - 1);
      if (r.position <= leading) continue; // in place
      deletes.push(r);
      reinsert.push(r.canonical);
      findings.push(
        finding(
          "foreign-rule-precedes-jump",
          "warning",
          family,
          `${t} ${chainLabel} has a rule of another owner above this allowlist's jump (position ${r.position}), so that rule decides first. The plan moves the jump back to the top.`,
          r.line,
        ),
      );
      changes.push(prefix("~", family, r.canonical, `moved to the top of ${chainLabel}`));
      continue;
    }
    deletes.push(r);
    if (want.includes(r.canonical)) {
      findings.push(
        finding(
          "duplicate-owned-rule",
          "warning",
          family,
          `${t} ${chainLabel} holds this allowlist's jump more than once; the plan removes the extra copy.`,
          r.line,
        ),
      );
    } else if (!isOurShape(r)) {
      findings.push(
        finding(
          "owned-rule-damaged",
          "warning",
          family,
          `${t} ${chainLabel} has a rule tagged "${tag}" that is not a jump this tool writes (edited by hand?); the plan replaces it.`,
          r.line,
        ),
      );
    }
    changes.push(prefix("-", family, r.line));
  }
  const missing = want.filter((j) => {
    const left = remaining.get(j) ?? 0;
    if (left > 0) {
      remaining.set(j, left - 1);
      return true;
    }
    return false;
  });
  for (const j of missing) changes.push(prefix("+", family, j));
  const deleted = new Set(deletes.map((r) => r.spec));
  const readds = rules.filter((r) => r.comment === tag && !deletes.includes(r) && deleted.has(r.spec));
  const again = readds.map((r) => r.canonical);
  return {
    deletes,
    inserts: want.filter((j) => missing.includes(j) || reinsert.includes(j) || again.includes(j)),
    readds,
  };
}

function planFamily(
  saveText: string | null,
  desired: AllowlistSpec | null,
  ruleName: string,
  family: Family,
  claim: Claim | undefined,
  ipsets: ReadonlyMap<string, LiveSet> | undefined,
): FamilyResult {
  const findings: Finding[] = [];
  const table = saveText === null ? null : parseFilterTable(saveText, family);
  const paths = policed(table, desired, family, findings);
  const blocked = paths.blocked;
  // The chain is wanted wherever some path is policed; the FORWARD/DOCKER-USER part only where
  // Docker manages the family.
  const police = paths.forward || paths.input;
  if (table === null) return { changes: [], findings, blocked };

  const chain = chainName(ruleName);
  const tag = tagOf(ruleName);
  const t = tool(family);
  const dockerUser = getChain(table, DOCKER_USER);
  const ownChain = getChain(table, chain);
  const forward = getChain(table, "FORWARD");
  const input = getChain(table, INPUT);

  // Host-wide findings (about DOCKER-USER and FORWARD) only matter where we police that path;
  // elsewhere they are someone else's business.
  if (paths.forward) {
    for (const f of table.findings) {
      if (f.code === "docker-user-missing" && family === "ipv6") {
        findings.push({ ...f, code: "docker-user-created" });
      } else {
        findings.push(f);
      }
    }
  } else {
    findings.push(
      ...table.findings.filter((f) => f.code === "legacy-tables-present" || f.code === "unparsed-line"),
    );
  }
  if (paths.forward && dockerUser === undefined && family === "ipv4") {
    return { changes: [], findings, blocked: true };
  }

  // --- Who holds the chain: never rewrite or delete another owner's (see ./owner.ts).
  const held = heldBy(ownChain, tag);
  const st = standing(held, claim);
  if (st.kind === "foreign") {
    findings.push(foreignOwner(family, chain, st.holder, claim, desired === null));
    return { changes: [], findings, blocked: true };
  }
  // A delete after a replacement (or a renamed resource of this stack) took the chain over:
  // it is theirs now, with its jumps; nothing of ours is left to remove.
  if (st.kind === "handed-over") return { changes: [], findings, blocked };
  if (st.kind === "take-over" && st.warn) {
    findings.push(
      finding(
        "owner-taken-over",
        "warning",
        family,
        `${t} chain ${chain} was held by ${st.from.name} (via ${st.from.via}), another resource of this stack; this allowlist (${claim!.owner!.name}) takes it over. If you renamed the resource, that is expected (an \`aliases\` entry with its old name keeps it one resource). If ${st.from.name} still exists, the two fight over the chain: give one of them another ruleName.`,
      ),
    );
  }
  if (desired !== null && paths.forward) findings.push(...overlaps(table, desired, tag, claim, family));
  if (claim?.operation === "read") findings.push(...orphans(table, chain, claim.owner, family));

  const changes: string[] = [];
  const wantJumps = paths.forward ? renderJumps(desired!, family) : [];
  const wantInputJumps = paths.input ? renderInputJumps(desired!) : [];
  const bridges = dockerBridges(table);
  // A large list goes into an ipset (./ipset.ts) where the host has ipset; elsewhere it stays a
  // linear chain, and the host is told what that costs.
  const setMode = police && keepsSet(desired!, family, ipsets !== undefined);
  if (police && !setMode && usesSet(desired!, family)) {
    findings.push(
      finding(
        "ipset-unavailable",
        "warning",
        family,
        `This allowlist has ${desired!.sources[family].length} ${family} sources (from ${SET_THRESHOLD} on they go into an ipset), but ipset does not work on this host (the \`ipset\` tool is missing, or the kernel's ip_set module): they are written as one rule each, which every new connection to the port walks (about half the new-connection rate at 10,000). Fix: install ipset (Debian/Ubuntu: \`apt-get install ipset\`; \`ipset list -n\` must work as root); the next \`pulumi up\` moves them into a set.`,
      ),
    );
  }
  const wantChain = police ? renderChainRules(desired!, family, bridges, claim?.owner, setMode) : [];
  const setPlan =
    ipsets === undefined
      ? undefined
      : planSets(ipsets, setMode ? renderSetLines(desired!, family) : [], ruleName, family);

  // Foreign rules that jump into our chain: we cannot delete the chain while they exist.
  const foreignRefs = table.chains
    .flatMap((c) => c.rules)
    .filter((r) => r.target === chain && r.comment !== tag && r.chain !== chain);
  for (const r of foreignRefs) {
    findings.push(
      finding(
        "foreign-reference-to-owned-chain",
        police ? "warning" : "error",
        family,
        `A rule not managed by this allowlist jumps into its chain ${chain}: ${JSON.stringify(r.line)}. ${police ? "It is left alone." : `The chain cannot be deleted while it does. Fix: remove it ("${t} -D ${r.chain} ${r.position}") and retry.`}`,
        r.line,
      ),
    );
  }
  if (!police && foreignRefs.length > 0) return { changes: [], findings, blocked: true };

  // --- DOCKER-USER: create it where Docker made none (ip6tables on Docker 20.10).
  let createdDockerUser = false;
  if (paths.forward && dockerUser === undefined) {
    createdDockerUser = true;
    changes.push(prefix("+", family, `-N ${DOCKER_USER}`, "Docker made no DOCKER-USER chain here"));
  }

  // --- FORWARD must reach DOCKER-USER first; insert our tagged jump when it does not.
  const forwardRules = forward?.rules ?? [];
  const ourForward = forwardRules.filter((r) => r.comment === FORWARD_TAG && isForwardJump(r));
  const forwardOk = forwardRules.length > 0 && isForwardJump(forwardRules[0]);
  const forwardLine = renderForwardJump();
  const forwardDeletes: ParsedRule[] = [];
  let forwardInsert = false;
  if (paths.forward) {
    if (createdDockerUser || !forwardOk) {
      // A misplaced jump of ours goes; Docker's own (untagged) jump is never touched.
      forwardDeletes.push(...ourForward);
      forwardInsert = true;
      changes.push(
        prefix(
          ourForward.length > 0 ? "~" : "+",
          family,
          `-I FORWARD 1 ${ruleSpec(forwardLine)}`,
          "DOCKER-USER must see packets first",
        ),
      );
    }
  }

  // --- Jumps: DOCKER-USER (DNATed traffic), then INPUT (the docker-proxy path).
  const duRules = dockerUser?.rules ?? [];
  const du = placeJumps(
    DOCKER_USER,
    duRules,
    wantJumps,
    tag,
    (r) => isOurJumpShape(r, chain),
    family,
    changes,
    findings,
  );
  const inp = placeJumps(
    INPUT,
    input?.rules ?? [],
    wantInputJumps,
    tag,
    (r) => isOurInputJumpShape(r, chain),
    family,
    changes,
    findings,
  );

  // --- Our tagged rules in other chains (not DOCKER-USER, INPUT or ours; not the FORWARD jump).
  const strays = table.chains
    .filter((c) => c.name !== DOCKER_USER && c.name !== INPUT && c.name !== chain)
    .flatMap((c) => c.rules)
    .filter((r) => r.comment === tag);
  for (const r of strays) {
    findings.push(
      finding(
        "owned-rule-damaged",
        "warning",
        family,
        `${t} chain ${r.chain} has a rule tagged "${tag}", which this tool never writes there; the plan removes it.`,
        r.line,
      ),
    );
    changes.push(prefix("-", family, r.line));
  }

  // --- Our chain.
  let rewriteChain = false;
  let deleteChain = false;
  const liveChain = ownChain?.rules ?? [];
  const liveCanon = liveChain.map((r) => r.canonical);
  if (police) {
    if (ownChain === undefined) {
      rewriteChain = true;
      changes.push(prefix("+", family, `-N ${chain}`));
      for (const l of wantChain) changes.push(prefix("+", family, l));
    } else if (!sameSequence(liveCanon, wantChain)) {
      rewriteChain = true;
      const seen = new Set<string>();
      for (const r of liveChain) {
        if (parseOwnerComment(r.comment, tag) !== undefined) {
          // The owner line: rewritten with the chain, never damage.
        } else if (r.comment !== tag || !r.canonical.startsWith(`-A ${chain} `)) {
          findings.push(
            finding(
              "owned-rule-damaged",
              "warning",
              family,
              `${t} chain ${chain} holds a rule without the tag "${tag}"; the chain belongs to this allowlist and is rewritten.`,
              r.line,
            ),
          );
        } else if (seen.has(r.canonical)) {
          findings.push(
            finding(
              "duplicate-owned-rule",
              "warning",
              family,
              `${t} chain ${chain} holds the same rule twice; the plan rewrites the chain.`,
              r.line,
            ),
          );
        }
        seen.add(r.canonical);
      }
      const removed = minus(liveCanon, wantChain);
      const added = minus(wantChain, liveCanon);
      for (const l of removed) changes.push(prefix("-", family, l));
      for (const l of added) changes.push(prefix("+", family, l));
      if (removed.length === 0 && added.length === 0) {
        changes.push(prefix("~", family, `-N ${chain}`, "rules reordered into the declared order"));
      }
    }
  } else if (ownChain !== undefined) {
    deleteChain = true;
    for (const r of liveChain) changes.push(prefix("-", family, r.line));
    changes.push(prefix("-", family, `-X ${chain}`));
  }

  // --- Where the DOCKER-USER path is not policed: a DOCKER-USER we created (only our FORWARD
  // jump refers to it) goes too, once nothing else is left in it.
  let dropDockerUser = false;
  const forwardRemovals: ParsedRule[] = [...forwardDeletes];
  if (!paths.forward && dockerUser !== undefined) {
    const leftInDu = duRules.length - du.deletes.length;
    const dpaLeft = duRules.filter((r) => isDpaComment(r.comment) && !du.deletes.includes(r)).length;
    const otherRefs = table.chains
      .flatMap((c) => c.rules)
      .filter((r) => r.target === DOCKER_USER && !(r.chain === "FORWARD" && r.comment === FORWARD_TAG));
    if (dpaLeft === 0 && ourForward.length > 0) {
      if (leftInDu === 0 && otherRefs.length === 0) {
        dropDockerUser = true;
        forwardRemovals.push(...ourForward);
        for (const r of ourForward) changes.push(prefix("-", family, r.line));
        changes.push(prefix("-", family, `-X ${DOCKER_USER}`, "created by this tool; nothing else uses it"));
      } else if (otherRefs.some((r) => r.chain === "FORWARD")) {
        // Docker's own jump exists again: ours is redundant once no allowlist needs it.
        forwardRemovals.push(...ourForward);
        for (const r of ourForward) changes.push(prefix("-", family, r.line));
      }
    }
  }

  for (const c of setPlan?.changes ?? []) changes.push(prefix(c.sign, family, c.line, c.note));

  if (changes.length === 0 || blocked) return { changes, findings, blocked };

  // --- Payload: declarations, deletions, inserts. Every rule is deleted by its exact text as the
  // host printed it, never by position: a foreign rule inserted between our read and the restore
  // (a writer that ignores our lock) shifts positions, and a position would then delete it.
  const restore = new RestoreBuilder().startTransaction("filter");
  if (createdDockerUser) restore.declareChain(DOCKER_USER);
  if (rewriteChain || deleteChain) restore.declareChain(chain); // creates or flushes our chain
  for (const r of [...du.deletes, ...du.readds]) restore.deleteRule(DOCKER_USER, r.spec);
  for (const r of [...inp.deletes, ...inp.readds]) restore.deleteRule(INPUT, r.spec);
  for (const r of [...forwardRemovals, ...strays]) restore.deleteRule(r.chain, r.spec);
  if (forwardInsert) restore.insert("FORWARD", 1, ruleSpec(forwardLine));
  for (const j of [...du.inserts].reverse()) restore.insert(DOCKER_USER, 1, ruleSpec(j));
  for (const j of [...inp.inserts].reverse()) restore.insert(INPUT, 1, ruleSpec(j));
  if (rewriteChain) for (const l of wantChain) restore.append(chain, ruleSpec(l));
  if (deleteChain) restore.deleteChain(chain);
  if (dropDockerUser) restore.deleteChain(DOCKER_USER);
  const payload = restore.endTransaction().build();
  return {
    changes,
    findings,
    blocked,
    plan: {
      payload,
      fingerprint: fingerprint(saveText!, ruleName),
      expected: [...wantJumps, ...wantInputJumps, ...wantChain],
      changes,
      // Where we police DOCKER-USER, the payload leaves exactly the spec's rules (see
      // verifyApplied), so the policy follows from the spec. The cut only ever removes DNATed
      // flows; what docker-proxy serves through INPUT is not DNATed, so a family policed on the
      // INPUT path alone has nothing to cut, and a deleted allowlist cuts nothing.
      conntrack: paths.forward ? conntrackPolicyOf(desired, family, bridges) : [],
      ...(setPlan === undefined ? {} : { sets: setPlan }),
    },
  };
}

/** The owner named by the owner line of our chain, if the chain has one. */
function heldBy(ownChain: ChainModel | undefined, tag: string): Owner | undefined {
  for (const r of ownChain?.rules ?? []) {
    const o = parseOwnerComment(r.comment, tag);
    if (o !== undefined) return o;
  }
  return undefined;
}

function foreignOwner(
  family: Family,
  chain: string,
  holder: Owner,
  claim: Claim | undefined,
  deleting: boolean,
): Finding {
  const me =
    claim?.owner === undefined
      ? "this allowlist (state written before owners existed)"
      : `this allowlist (${claim.owner.name})`;
  const fix = deleting
    ? `This allowlist's rules are not on the host any more. If that is expected, remove it from the stack without touching the host: \`pulumi state delete <urn>\` (\`pulumi stack --show-urns\` lists the URN). Otherwise remove ${chain} from ${holder.name} first.`
    : claim?.operation === "read"
      ? `Give this allowlist another ruleName (its next \`pulumi up\` then creates its own chain), or remove the allowlist from ${holder.name}.`
      : `Give this allowlist another ruleName, or remove the allowlist from ${holder.name} first (if that stack or program no longer exists: \`${tool(family)} -S ${chain}\` shows the chain; delete its jumps and the chain by hand).`;
  return finding(
    "owned-by-another",
    "error",
    family,
    `${tool(family)} chain ${chain} on this host is held by ${holder.name} (via ${holder.via}), not by ${me}; nothing was changed. ${fix}`,
  );
}

/** A jump of another allowlist in DOCKER-USER: its chain, protocol and ports. */
function otherJumps(
  table: FilterTable,
  tag: string,
): { chain: string; protocol: string; from: number; to: number; dst?: string; comment: string }[] {
  const out: { chain: string; protocol: string; from: number; to: number; dst?: string; comment: string }[] =
    [];
  for (const r of getChain(table, DOCKER_USER)?.rules ?? []) {
    const ports = r.ctOrigDstPort?.value;
    const protocol = r.protocol?.value;
    if (
      !isDpaComment(r.comment) ||
      r.comment === tag ||
      r.target === undefined ||
      ports === undefined ||
      protocol === undefined
    )
      continue;
    if (!r.target.startsWith(CHAIN_PREFIX)) continue;
    out.push({
      chain: r.target,
      protocol,
      from: ports.from,
      to: ports.to,
      dst: r.ctOrigDst?.value,
      comment: r.comment!,
    });
  }
  return out;
}

/**
 * Other owners' allowlists on the same port (and protocol, and original destination where both
 * name one): each lets in only what both lists allow. A replacement of this very allowlist (same
 * owner) is not reported: the old one goes once the new one is in place. Nor, while writing, is
 * another resource of the same stack: a renamed resource is created before its old self is
 * deleted, and a real overlap within one stack shows on the next refresh.
 */
function overlaps(
  table: FilterTable,
  desired: AllowlistSpec,
  tag: string,
  claim: Claim | undefined,
  family: Family,
): Finding[] {
  const me = claim?.owner;
  const out: Finding[] = [];
  const seen = new Set<string>();
  const dst = originalDestinationText(desired);
  for (const j of otherJumps(table, tag)) {
    if (!desired.protocols.includes(j.protocol as Protocol)) continue;
    if (j.to < desired.ports.from || j.from > desired.ports.to) continue;
    if (dst !== undefined && j.dst !== undefined && dst !== j.dst) continue;
    if (seen.has(j.chain)) continue;
    const holder = heldBy(getChain(table, j.chain), j.comment);
    if (me !== undefined && holder?.name === me.name) continue;
    if (
      me !== undefined &&
      holder !== undefined &&
      claim?.operation !== "read" &&
      stackOf(holder.name) === stackOf(me.name)
    )
      continue;
    seen.add(j.chain);
    out.push(
      finding(
        "overlapping-allowlist",
        "warning",
        family,
        `Port ${portText(desired)} is also policed by ${j.chain} (${holder === undefined ? "no owner line" : `held by ${holder.name}`}): a source gets in only if both allowlists let it in. If one allowlist per port is meant, merge them into one (or give them distinct ports or originalDestination).`,
      ),
    );
  }
  return out;
}

/**
 * Chains of this tool on the host that nobody manages any more (refresh only): held by this
 * very resource under another ruleName (an earlier ruleName whose delete did not run), without
 * an owner line (made before owners existed, or by hand), or with no jump into them (inert).
 */
function orphans(table: FilterTable, chain: string, me: Owner | undefined, family: Family): Finding[] {
  const out: Finding[] = [];
  const t = tool(family);
  const targets = new Set(table.chains.flatMap((c) => c.rules).map((r) => r.target));
  for (const c of table.chains) {
    if (!c.name.startsWith(CHAIN_PREFIX) || c.name === chain) continue;
    const tag = `${TAG_PREFIX}${c.name.slice(CHAIN_PREFIX.length)}`;
    const holder = heldBy(c, tag);
    const how = `\`${t} -S ${c.name}\` shows it; delete its jumps (\`${t} -S | grep -- '-j ${c.name}'\`) and then the chain (\`${t} -F ${c.name}; ${t} -X ${c.name}\`).`;
    if (me !== undefined && holder?.name === me.name) {
      out.push(
        finding(
          "orphan-chain",
          "warning",
          family,
          `${t} chain ${c.name} is held by this resource (${me.name}) under another ruleName, which it no longer manages (a rename whose delete did not run?). ${how}`,
        ),
      );
    } else if (!targets.has(c.name)) {
      out.push(
        finding(
          "orphan-chain",
          "warning",
          family,
          `${t} chain ${c.name}${holder === undefined ? "" : ` (held by ${holder.name})`} has no jump into it: it polices nothing. If its owner is gone: ${how}`,
        ),
      );
    } else if (holder === undefined) {
      out.push(
        finding(
          "orphan-chain",
          "warning",
          family,
          `${t} chain ${c.name} has no owner line: made by a version of this tool before owners existed (its next \`pulumi up\` adds one), or by hand. If no stack manages it any more: ${how}`,
        ),
      );
    }
  }
  return out;
}

/** `-p tcp|udp ... --ctorigdstport P ... -m comment ... -j <our chain>`: a (maybe stale) jump of ours. */
function isOurJumpShape(rule: ParsedRule, chain: string): boolean {
  const protocol = rule.protocol?.value;
  const ports = rule.ctOrigDstPort?.value;
  return (
    rule.target === chain &&
    (protocol === "tcp" || protocol === "udp") &&
    ports !== undefined &&
    rule.comment !== undefined &&
    // Nothing else in it: exactly the jump we would render from its own fields.
    rule.canonical === renderJump(protocol, ports, rule.ctOrigDst?.value, rule.comment, chain)
  );
}

/** `[-d X] ! -i lo -p tcp|udp -m tcp|udp --dport P ... -j <our chain>`: a (maybe stale) INPUT jump of ours. */
function isOurInputJumpShape(rule: ParsedRule, chain: string): boolean {
  const protocol = rule.protocol?.value;
  const ports = rule.destinationPort?.value;
  return (
    rule.target === chain &&
    (protocol === "tcp" || protocol === "udp") &&
    ports !== undefined &&
    rule.comment !== undefined &&
    rule.canonical === renderInputJump(protocol, ports, rule.destination?.value, rule.comment, chain)
  );
}

/**
 * Plans one allowlist on one host. `live` holds each family's `iptables-save -t filter` text, or
 * null when the host gave none (no ip6tables). `desired` null plans the deletion. `ruleName` is
 * the owned name (the spec's, or the one recorded in state when deleting).
 */
export function planAllowlist(
  live: LiveState,
  desired: AllowlistSpec | null,
  ruleName: string,
  claim?: Claim,
): Plan {
  if (desired !== null && desired.ruleName !== ruleName) {
    throw new Error(
      `planAllowlist: ruleName ${JSON.stringify(ruleName)} differs from the spec's ${JSON.stringify(desired.ruleName)}; pass the spec's ruleName (a rename is a delete of the old name plus a create).`,
    );
  }
  // The allowlist goes where Docker's firewall is; in the other one, what is left of ours from
  // before the host switched backends is removed in the same operation (issue 10, item 4).
  const backend = firewallBackendOf(live);
  const ipDesired = backend === "iptables" ? desired : null;
  const sets = live.ipsets === undefined ? undefined : parseIpsetSave(live.ipsets);
  const v4 = planFamily(live.ipv4, ipDesired, ruleName, "ipv4", claim, sets);
  const v6 = planFamily(live.ipv6, ipDesired, ruleName, "ipv6", claim, sets);
  const n = planNftPart(live, backend === "nftables" ? desired : null, ruleName, claim);
  if (backend === "nftables") {
    // Leftover chains another owner holds are theirs: say so, never block on them.
    for (const r of [v4, v6]) {
      if (!r.blocked) continue;
      r.blocked = false;
      r.plan = undefined;
      r.changes = [];
      r.findings = r.findings.map((f) =>
        f.code === "owned-by-another"
          ? {
              ...f,
              severity: "warning",
              message: `Left in iptables (Docker now runs its nftables backend): ${f.message}`,
            }
          : f,
      );
    }
  }
  const blocked = v4.blocked || v6.blocked || n.blocked;
  const changes = [...v4.changes, ...v6.changes, ...n.changes];
  const families: { ipv4?: FamilyPlan; ipv6?: FamilyPlan } = {};
  if (!blocked) {
    if (v4.plan) families.ipv4 = v4.plan;
    if (v6.plan) families.ipv6 = v6.plan;
  }
  return {
    inSync: changes.length === 0 && !blocked,
    backend,
    blocked,
    changes,
    findings: [...v4.findings, ...v6.findings, ...n.findings],
    families,
    ...(n.plan === undefined || blocked ? {} : { nft: n.plan }),
    nftExpected: n.expected,
  };
}

/**
 * Our nftables table: planned towards `desired` (an nftables host) or towards nothing (an
 * iptables host that still has it from before a switch, or a delete), after checking who holds it.
 */
function planNftPart(
  live: LiveState,
  desired: AllowlistSpec | null,
  ruleName: string,
  claim: Claim | undefined,
): { changes: string[]; findings: Finding[]; blocked: boolean; expected: string[]; plan?: Plan["nft"] } {
  const none = { changes: [], findings: [], blocked: false, expected: [] };
  const nft = live.nft;
  if (nft === undefined || (desired === null && nft.listing === null)) return none;
  const st = standing(
    nft.listing === null ? undefined : nftTableOwner(nft.listing, ruleName),
    nftClaim(claim),
  );
  if (st.kind === "handed-over") return none;
  const findings: Finding[] = [];
  const table = `nftables table ${nftTableRef(ruleName)}`;
  if (st.kind === "foreign") {
    const leftover = desired === null && claim?.operation !== "delete";
    findings.push(
      finding(
        "owned-by-another",
        leftover ? "warning" : "error",
        "ipv4",
        `${table} on this host is held by ${st.holder.name} (via ${st.holder.via}), not by this allowlist${claim?.owner === undefined ? "" : ` (${claim.owner.name})`}; nothing of it was changed. Fix: give this allowlist another ruleName, or remove the allowlist from ${st.holder.name} first (if that stack no longer exists: \`nft delete table ${nftTableRef(ruleName)}\` on the host).`,
      ),
    );
    return { ...none, findings, blocked: !leftover };
  }
  if (st.kind === "take-over" && st.warn) {
    findings.push(
      finding(
        "owner-taken-over",
        "warning",
        "ipv4",
        `${table} was held by ${st.from.name} (via ${st.from.via}), another resource of this stack; this allowlist takes it over. If you renamed the resource, that is expected; if ${st.from.name} still exists, give one of them another ruleName.`,
      ),
    );
  }
  const p = planNft(nft, desired, ruleName, claim?.owner);
  // A refresh says out loud what a missing or changed table means (an up repairs both).
  if (claim?.operation === "read" && desired !== null && p.changes.length > 0) {
    findings.push(
      nft.listing === null
        ? finding(
            "nft-table-missing",
            "error",
            "ipv4",
            `${table} is missing on this host (a reboot or \`nft flush ruleset\` without the guard running, or deleted by hand): port ${portText(desired)} is open to everyone. Fix: \`pulumi up\` puts it back; check that the guard runs (\`systemctl status docker-port-allowlist-guard.timer\`).`,
          )
        : finding(
            "nft-table-drifted",
            "warning",
            "ipv4",
            `${table} is not as planned (${p.changes.length} line(s) differ, first: ${p.changes.slice(0, 2).join("; ")}). Fix: \`pulumi up\` rewrites it.`,
          ),
    );
  }
  const conntrack =
    desired === null
      ? []
      : (["ipv4", "ipv6"] as const).flatMap((f) => conntrackPolicyOf(desired, f, nft.bridges));
  return {
    changes: p.changes,
    findings,
    blocked: false,
    expected: p.expected,
    ...(p.plan === undefined ? {} : { plan: { ...p.plan, conntrack } }),
  };
}

/**
 * Which paths of `family` `desired` polices on the host whose `iptables-save -t filter` text is
 * `saveText` (null: the host gave none): what the guard's saved copy holds (./guard.ts).
 */
export function policedPaths(
  saveText: string | null,
  desired: AllowlistSpec,
  family: Family,
): { forward: boolean; input: boolean } {
  const table = saveText === null ? null : parseFilterTable(saveText, family);
  const p = policed(table, desired, family, []);
  return { forward: p.forward, input: p.input };
}

/**
 * Checks a family's state read back after an apply: empty when it is exactly as planned
 * (for `desired` null: when nothing of ours is left). `ipsets`: `ipset save` of the allowlist's
 * sets after the apply (undefined: the host has no ipset).
 */
export function verifyApplied(
  saveText: string,
  desired: AllowlistSpec | null,
  ruleName: string,
  family: Family,
  claim?: Claim,
  ipsets?: string,
): Finding[] {
  const sets = ipsets === undefined ? undefined : parseIpsetSave(ipsets);
  const result = planFamily(saveText, desired, ruleName, family, claim, sets);
  const errors = result.findings.filter((f) => f.severity === "error");
  if (result.changes.length === 0 && !result.blocked) return errors;
  return [
    ...errors,
    finding(
      "verify-mismatch",
      "error",
      family,
      `After the apply, ${tool(family)} does not show what was planned (${result.changes.length} difference(s), first: ${result.changes.slice(0, 3).join("; ")}). Another tool may have changed the rules at the same time, or the host's iptables prints rules differently. Fix: run the update again; if it persists, report the ${tool(family)}-save output.`,
    ),
  ];
}

/**
 * What changed in DOCKER-USER's foreign rules (every rule not of some allowlist) between
 * `before` (the state a plan was made from) and `after` (the state after its payload), as a
 * problem message; undefined when they are the same, in the same order. The host edge refuses to
 * commit such an apply: a writer that ignores our lock changed the chain meanwhile.
 */
export function foreignChanges(before: string | null, after: string, family: Family): string | undefined {
  const foreignOf = (text: string | null) =>
    text === null
      ? []
      : (getChain(parseFilterTable(text, family), DOCKER_USER)?.rules ?? [])
          .filter((r) => !isDpaComment(r.comment))
          .map((r) => r.canonical);
  const was = foreignOf(before);
  const now = foreignOf(after);
  if (sameSequence(was, now)) return undefined;
  const added = minus(now, was);
  const gone = minus(was, now);
  const what = [
    ...added.map((l) => `added ${JSON.stringify(l)}`),
    ...gone.map((l) => `removed ${JSON.stringify(l)}`),
  ];
  return `another writer changed ${tool(family)} ${DOCKER_USER} while this change was applied (${what.length > 0 ? what.join(", ") : "rules reordered"}); rolled back, their rules kept. Run again to plan with them.`;
}
