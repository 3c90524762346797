/**
 * The guard's pure side (provider/core/guard.ts): the saved copy (exact text, and that it is
 * exactly the lines the planner leaves on a host), the systemd units (golden), and what the
 * provider sends and reports from the state a host gives back.
 */
import {
  GUARD_SCRIPT_PATH,
  guardFindings,
  guardUpdate,
  guardUpdateEmpty,
  ownerOf,
  planAllowlist,
  policedPaths,
  dockerBridgesOf,
  renderGuardCopy,
  renderGuardListener,
  renderGuardService,
  renderGuardTimer,
  sha256,
  validateAllowlist,
  type AllowlistSpec,
  type GuardReport,
} from "../../provider/core";
import { caseNames, loadCase } from "./support/fixtures";
import { applyPayload } from "./support/simulate";

function spec(args: object = {}): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, sources: ["198.18.1.0/24"], ...args }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

const OWNER = ownerOf("shop/prod", "web", "198.18.0.10", 22);
const TAG = '-m comment --comment "dpa:web"';

describe("renderGuardCopy", () => {
  test("holds our FORWARD jump, the jumps and the chain with its owner line, as iptables-save prints them", () => {
    expect(
      renderGuardCopy(
        spec({ protocols: ["tcp", "udp"] }),
        "ipv4",
        { forward: true, input: true },
        ["docker0"],
        OWNER,
      ),
    ).toBe(`# docker-port-allowlist guard copy of DPA-web (ipv4), written by the provider with every change.
# /var/lib/docker-port-allowlist/guard.sh puts back what is missing from the live rules; do not edit (the next \`pulumi up\` rewrites it).
-A FORWARD -m comment --comment "dpa::forward" -j DOCKER-USER
-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 ${TAG} -j DPA-web
-A DOCKER-USER -p udp -m conntrack --ctorigdstport 8080 ${TAG} -j DPA-web
-A INPUT ! -i lo -p tcp -m tcp --dport 8080 ${TAG} -j DPA-web
-A INPUT ! -i lo -p udp -m udp --dport 8080 ${TAG} -j DPA-web
-A DPA-web -m conntrack --ctstate RELATED,ESTABLISHED ${TAG} -j RETURN
-A DPA-web -i docker0 ${TAG} -j RETURN
-A DPA-web -s 198.18.1.0/24 ${TAG} -j RETURN
-A DPA-web ${TAG} -j DROP
-A DPA-web -m comment --comment "dpa:web owner=shop/prod/web via=198.18.0.10:22"
`);
  });

  test("leaves out the DOCKER-USER path where it is not policed, and is empty where nothing is", () => {
    const s = spec({ sources: ["2001:db8::/32"] });
    const inputOnly = renderGuardCopy(s, "ipv6", { forward: false, input: true }, []);
    expect(inputOnly).not.toMatch(/FORWARD|DOCKER-USER/);
    expect(inputOnly).toContain(`-A INPUT ! -i lo -p tcp -m tcp --dport 8080 ${TAG} -j DPA-web\n`);
    expect(inputOnly).toContain(`-A DPA-web -s 2001:db8::/32 ${TAG} -j RETURN\n`);
    expect(renderGuardCopy(s, "ipv6", { forward: false, input: false }, [])).toBe("");
  });

  // The copy is what the guard makes sure of: exactly our lines after a plan is applied, on every
  // fixture host (Docker 20.10 and 28, IPv6 with and without Docker's chains, foreign rules).
  test.each(caseNames().filter((n) => loadCase(n).desired !== null))(
    "%s: every line of the copy is on the host after the plan, and they are all of ours",
    (name) => {
      const c = loadCase(name);
      const desired = c.desired!;
      const plan = planAllowlist(c.live, desired, c.ruleName, { owner: OWNER, operation: "create" });
      if (plan.blocked) return;
      for (const f of ["ipv4", "ipv6"] as const) {
        const before = c.live[f];
        if (before === null) continue;
        const fp = plan.families[f];
        const after = fp === undefined ? before : applyPayload(before, fp.payload, f);
        const copy = renderGuardCopy(
          desired,
          f,
          policedPaths(after, desired, f),
          dockerBridgesOf(after, f),
          OWNER,
        );
        const lines = copy.split("\n").filter((l) => l.startsWith("-A "));
        const forward = lines.filter((l) => l.startsWith("-A FORWARD "));
        const ours = lines.filter((l) => !l.startsWith("-A FORWARD "));
        const live = after.split("\n");
        const liveOurs = live.filter(
          (l) =>
            l.startsWith(`-A DPA-${c.ruleName} `) ||
            (l.includes(` -j DPA-${c.ruleName}`) && l.includes('"dpa:')),
        );
        expect(ours.sort()).toEqual(liveOurs.sort());
        // The FORWARD line says "FORWARD reaches DOCKER-USER first", present where DOCKER-USER is policed.
        expect(forward.length).toBe(liveOurs.some((l) => l.startsWith("-A DOCKER-USER ")) ? 1 : 0);
      }
    },
  );
});

describe("the systemd units (golden)", () => {
  test("the service: one guard round, after dockerd, wanted by it", () => {
    expect(renderGuardService())
      .toBe(`# Installed by docker-port-allowlist; removed with the last allowlist on this host. Do not edit.
[Unit]
Description=docker-port-allowlist guard: put back the allowlists' iptables rules
After=docker.service firewalld.service

[Service]
Type=oneshot
ExecStart=/bin/bash /var/lib/docker-port-allowlist/guard.sh --once

[Install]
WantedBy=docker.service
`);
  });

  test("the timer: every 20 s, to the second", () => {
    expect(renderGuardTimer())
      .toBe(`# Installed by docker-port-allowlist; removed with the last allowlist on this host. Do not edit.
[Unit]
Description=docker-port-allowlist guard, every 20 s

[Timer]
OnActiveSec=20s
OnUnitActiveSec=20s
AccuracySec=1s
Unit=docker-port-allowlist-guard.service

[Install]
WantedBy=timers.target
`);
  });
});

describe("the firewalld listener unit (golden)", () => {
  test("a guard round after each firewalld reload, only where firewalld is installed", () => {
    expect(renderGuardListener())
      .toBe(`# Installed by docker-port-allowlist; removed with the last allowlist on this host. Do not edit.
[Unit]
Description=docker-port-allowlist guard: put the rules back after each firewalld reload
After=dbus.service firewalld.service docker.service
ConditionPathExists=|/usr/sbin/firewalld
ConditionPathExists=|/sbin/firewalld

[Service]
ExecStart=/bin/bash /var/lib/docker-port-allowlist/guard.sh --on-firewalld-reload
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
`);
  });
});

describe("guardUpdate and guardFindings", () => {
  const SCRIPT = "#!/usr/bin/env bash\necho guard\n";
  const copy4 = renderGuardCopy(spec(), "ipv4", { forward: true, input: true }, ["docker0"], OWNER);
  const wanted = { ruleName: "web", script: SCRIPT, copies: { ipv4: copy4, ipv6: "" } };
  const current: GuardReport = {
    systemd: true,
    script: sha256(SCRIPT),
    service: sha256(renderGuardService()),
    timer: sha256(renderGuardTimer()),
    listener: sha256(renderGuardListener()),
    serviceEnabled: "enabled",
    timerEnabled: "enabled",
    timerActive: "active",
    listenerEnabled: "enabled",
    copies: { ipv4: copy4, ipv6: null },
  };
  const persist = { on: true, v4: "/etc/iptables/rules.v4", v6: "/etc/iptables/rules.v6" };

  test("a current guard needs nothing and says nothing", () => {
    expect(guardUpdateEmpty(guardUpdate(current, wanted))).toBe(true);
    expect(guardFindings(current, wanted, persist)).toEqual([]);
  });

  test("a fresh host gets the copy, the script and the units", () => {
    const fresh: GuardReport = {
      ...current,
      script: "missing",
      service: "missing",
      timer: "missing",
      listener: "missing",
      serviceEnabled: "not-found",
      timerEnabled: "not-found",
      timerActive: "inactive",
      listenerEnabled: "not-found",
      copies: { ipv4: null, ipv6: null },
    };
    expect(guardUpdate(fresh, wanted)).toEqual({
      copies: { ipv4: copy4 },
      script: SCRIPT,
      service: renderGuardService(),
      timer: renderGuardTimer(),
      listener: renderGuardListener(),
    });
    expect(guardFindings(fresh, wanted, persist).map((f) => [f.code, f.family])).toEqual([
      ["guard-not-installed", "ipv4"],
      ["guard-stale", "ipv4"],
    ]);
  });

  test("a disabled timer is enabled again; a stale copy is rewritten and a copy no longer wanted removed", () => {
    const r: GuardReport = {
      ...current,
      timerEnabled: "disabled",
      copies: { ipv4: "old\n", ipv6: "old6\n" },
    };
    expect(guardUpdate(r, wanted)).toEqual({
      copies: { ipv4: copy4, ipv6: "" },
      service: renderGuardService(),
      timer: renderGuardTimer(),
      listener: renderGuardListener(),
    });
    expect(guardFindings(r, wanted, persist).map((f) => [f.code, f.family])).toEqual([
      ["guard-not-enabled", "ipv4"],
      ["guard-stale", "ipv4"],
      ["guard-stale", "ipv6"],
    ]);
  });

  test("a delete sends only the removal of its copies (the host removes the guard with the last one)", () => {
    const none = { ...wanted, copies: { ipv4: "", ipv6: "" } };
    expect(guardUpdate(current, none)).toEqual({ copies: { ipv4: "" } });
    expect(guardUpdateEmpty(guardUpdate({ ...current, copies: { ipv4: null, ipv6: null } }, none))).toBe(
      true,
    );
  });

  test("without systemd: no units, and a warning naming what still brings the rules back", () => {
    const r: GuardReport = { ...current, systemd: false, service: "missing", timer: "missing" };
    expect(guardUpdateEmpty(guardUpdate(r, wanted))).toBe(true);
    const [f, ...rest] = guardFindings(r, wanted, persist);
    expect(rest).toEqual([]);
    expect(f).toMatchObject({ code: "guard-not-running", severity: "warning" });
    expect(f.message).toContain(
      "the iptables-persistent files (/etc/iptables/rules.v4, /etc/iptables/rules.v6)",
    );
    expect(f.message).toContain(`bash ${GUARD_SCRIPT_PATH} --loop 20`);
    expect(guardFindings(r, wanted, { ...persist, on: false })[0].message).toContain("(persist is off)");
  });
});
