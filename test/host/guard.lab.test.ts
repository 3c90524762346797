/**
 * The guard on a real Docker host, with real traffic: after each event of the host's life that
 * removes our rules (our jumps deleted or pushed below a foreign rule, `iptables -F DOCKER-USER`,
 * a dockerd restart on a host whose rules were not restored, DOCKER-USER deleted the way
 * `firewall-cmd --reload` does), the guard the provider installed puts them back: the client
 * that must stay out is kept out again, the allowed client gets in, and the foreign rules are
 * exactly as the event left them. IPv4 and IPv6, on Docker 29 and on Docker 20.10 (with
 * ip6tables, which makes no ip6tables DOCKER-USER: the guard makes it, as the provider does).
 *
 * The lab hosts have no systemd, so the test runs the installed script the way the units do:
 * `guard.sh --once` (the service, after each event), `guard.sh --on-firewalld-reload` (the
 * listener, on a D-Bus daemon of the test's own that dbus-send signals as firewalld does) and
 * `guard.sh --loop 1` (the timer, with a short interval: the test waits for its "restored" line,
 * not for a time).
 */
import { spawn, type ChildProcess } from "child_process";
import { startLab, type DockerVersion, type Lab, type LabHost } from "../../lab";
import type { ConnectionArgs } from "../../provider/args";
import {
  GUARD_SCRIPT_PATH,
  guardCopyPath,
  ownerOf,
  planAllowlist,
  validateAllowlist,
  type AllowlistSpec,
  type Claim,
} from "../../provider/core";
import { converge, guardFindingsOf, inspectHost } from "../../provider/host";
import { GUARD_SCRIPT } from "../../provider/host/scripts";
import { until } from "./stubhost";

jest.setTimeout(300_000);

let lab: Lab;
let h: LabHost;
const children: ChildProcess[] = [];
const TAG = '-m comment --comment "dpa:guarded"';
let web: AllowlistSpec;
let claim: Claim;

function conn(): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

async function sh(cmd: string): Promise<string> {
  const r = await lab.hostExec(h, cmd);
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}

/** Rules of DOCKER-USER, INPUT and FORWARD that are not ours, in order. */
async function foreign(): Promise<string[]> {
  return (await sh("iptables-save -t filter"))
    .split("\n")
    .filter((l) => /^-A (DOCKER-USER|INPUT|FORWARD) /.test(l) && !l.includes('--comment "dpa:'));
}

/** [allowed client gets in, other client gets in] on the published 8080/tcp, over IPv4 (or IPv6). */
async function access(family: 4 | 6 = 4): Promise<[boolean, boolean]> {
  const [allowed, other] = lab.clients;
  return [await lab.probe(allowed, h, 8080, "tcp", family), await lab.probe(other, h, 8080, "tcp", family)];
}

/** One guard round as the service runs it; its stdout. */
async function guardOnce(): Promise<string> {
  const r = await lab.hostExec(h, `bash ${GUARD_SCRIPT_PATH} --once`);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  return r.stdout;
}

// Docker 29 (the default) and 20.10, which makes no ip6tables DOCKER-USER of its own.
const LEGS: [DockerVersion][] = [["29"], ["20.10"]];

describe.each(LEGS)("Docker %s: the guard puts our rules back, and only ours", (dockerVersion) => {
  beforeAll(async () => {
    lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true, dockerVersion });
    h = lab.hosts[0];
    const [allowed] = lab.clients;
    const v = validateAllowlist(
      { port: 8080, sources: [`${allowed.ipv4}/32`, `${allowed.ipv6!}/128`], ruleName: "guarded" },
      "guarded",
    );
    if (!v.ok) throw new Error(JSON.stringify(v.failures));
    web = v.spec;
    claim = { owner: ownerOf("shop/prod", "guarded", h.ipv4, 22), operation: "create" };
    // Foreign rules the guard must never touch: one in DOCKER-USER, one in INPUT.
    await sh("iptables -I DOCKER-USER 1 -s 198.18.77.0/24 -j DROP");
    await sh("iptables -I INPUT 1 -p tcp -m tcp --dport 2222 -j ACCEPT");
  });
  afterAll(async () => {
    // Only the processes this file started, by their own handle (pid).
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await lab?.down();
  });

  test("create installs it (no systemd here: said so) with its saved copy; a round then finds everything in place", async () => {
    const o = await converge(conn(), web, web, { claim });
    expect(o.applied).toBe(true);
    expect(o.guard).toMatchObject({ installed: "no-systemd", failed: [] });
    expect(await sh(`cat ${GUARD_SCRIPT_PATH}`)).toBe(GUARD_SCRIPT);
    expect(await sh(`cat ${guardCopyPath("guarded", "ipv4")}`)).toContain(`-A DPA-guarded ${TAG} -j DROP`);
    // What refresh reports about it: installed and current, but nothing runs it on this host.
    const { snapshot } = await inspectHost(conn(), web);
    expect(guardFindingsOf(web, web, snapshot, snapshot.guard, claim.owner).map((f) => f.code)).toEqual([
      "guard-not-running",
    ]);
    expect(await access()).toEqual([true, false]);
    expect(await access(6)).toEqual([true, false]);
    expect(await guardOnce()).toBe("");
  });

  test("our jumps deleted: put back; the foreign rules stay exactly as they are", async () => {
    const before = await foreign();
    const jumps = (await sh("iptables-save -t filter"))
      .split("\n")
      .filter((l) => /^-A (DOCKER-USER|INPUT) /.test(l) && l.endsWith("-j DPA-guarded"));
    expect(jumps).toHaveLength(2);
    for (const j of jumps) await sh(`iptables ${j.replace(/^-A/, "-D")}`);
    expect(await access()).toEqual([true, true]); // fail-open until the guard runs
    const out = await guardOnce();
    expect(out).toContain("dpa-guard: restored (iptables): jump missing, inserted at the top of DOCKER-USER");
    expect(out).toContain("dpa-guard: restored (iptables): jump missing, inserted at the top of INPUT");
    expect(await access()).toEqual([true, false]);
    expect(await foreign()).toEqual(before);
    // Above the foreign rules again.
    const du = (await sh("iptables -S DOCKER-USER")).split("\n");
    expect(du[1]).toContain("-j DPA-guarded");
  });

  test("a foreign ACCEPT inserted above our jump (as a ufw reload does): ours moves back on top, the foreign rule stays", async () => {
    const [, other] = lab.clients;
    await sh(`iptables -I DOCKER-USER 1 -s ${other.ipv4}/32 -j ACCEPT`);
    const before = await foreign();
    expect(await access()).toEqual([true, true]);
    expect(await guardOnce()).toContain(
      "dpa-guard: restored (iptables): jump below a foreign rule, moved to the top of DOCKER-USER",
    );
    expect(await access()).toEqual([true, false]);
    expect(await foreign()).toEqual(before);
    await sh(`iptables -D DOCKER-USER -s ${other.ipv4}/32 -j ACCEPT`);
  });

  test("iptables -F DOCKER-USER: put back; what the flush left is left", async () => {
    await sh("iptables -F DOCKER-USER");
    const after = await foreign();
    expect(await access()).toEqual([true, true]);
    expect(await guardOnce()).toContain("inserted at the top of DOCKER-USER");
    expect(await access()).toEqual([true, false]);
    expect(await foreign()).toEqual(after);
    expect(await guardOnce()).toBe("");
  });

  test("DOCKER-USER deleted as firewall-cmd --reload does: the chain, our jumps and a FORWARD jump come back", async () => {
    await sh("iptables -D FORWARD -j DOCKER-USER && iptables -F DOCKER-USER && iptables -X DOCKER-USER");
    const after = await foreign();
    expect(await access()).toEqual([true, true]);
    const out = await guardOnce();
    expect(out).toContain("chain DOCKER-USER was missing: created");
    expect(out).toContain("FORWARD did not jump to DOCKER-USER first");
    expect(await access()).toEqual([true, false]);
    expect(await foreign()).toEqual(after);
    expect((await sh("iptables -S FORWARD")).split("\n")[1]).toBe(
      '-A FORWARD -m comment --comment "dpa::forward" -j DOCKER-USER',
    );
  });

  test("dockerd restarted on a host whose rules were not restored: everything of ours comes back", async () => {
    await lab.reboot(h, { restorePersisted: false });
    const after = await foreign();
    expect(await access()).toEqual([true, true]);
    expect(await access(6)).toEqual([true, true]);
    const out = await guardOnce();
    expect(out).toContain("chain DPA-guarded was missing: created");
    if (dockerVersion === "20.10") {
      // Docker 20.10 makes no ip6tables DOCKER-USER: the guard creates it and our FORWARD jump, as the provider did.
      expect(out).toContain("dpa-guard: restored (ip6tables): chain DOCKER-USER was missing: created");
    } else {
      // Docker 29 made its own: ours go back into it.
      expect(out).not.toContain("chain DOCKER-USER was missing");
      expect(out).toContain("dpa-guard: restored (ip6tables): chain DPA-guarded was missing: created");
    }
    expect(await access()).toEqual([true, false]);
    expect(await access(6)).toEqual([true, false]);
    expect(await foreign()).toEqual(after);
    expect(await guardOnce()).toBe("");
  });

  test("a reboot that restores the saved rules files before dockerd starts: ours end up in place", async () => {
    // The guard restored rules behind the provider's back: the next write saves them again.
    const saved = await converge(conn(), web, web, { claim: { ...claim, operation: "update" } });
    expect(saved.persisted).toBe(true);
    await lab.reboot(h);
    await guardOnce();
    expect(await access()).toEqual([true, false]);
    const live = await sh("iptables-save -t filter");
    expect(planAllowlist({ ipv4: live, ipv6: null }, web, "guarded", claim).changes).toEqual([]);
  });

  test("a firewalld reload (its D-Bus signal Reloaded) has the listener put them back at once", async () => {
    // A D-Bus daemon of our own stands in for the system bus, and dbus-send for firewalld: the
    // listener runs exactly as its unit starts it, with the bus address in its environment.
    const inHost = (env: string[], argv: string[]) =>
      spawn("nsenter", ["-t", String(h.nsPid), "-n", "-m", "--", "env", ...env, ...argv], {
        stdio: ["ignore", "pipe", "pipe"],
      });
    const conf =
      "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN' " +
      "'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'><busconfig><type>system</type>" +
      "<listen>unix:tmpdir=/tmp</listen><auth>EXTERNAL</auth><policy context='default'>" +
      "<allow user='*'/><allow own='*'/><allow send_type='signal'/><allow send_type='method_call'/>" +
      "<allow receive_type='signal'/><allow eavesdrop='true'/></policy></busconfig>";
    const startBus =
      'f=$(mktemp) && printf "%s" "$1" > "$f" && exec dbus-daemon --nofork --print-address --config-file="$f"';
    const bus = inHost([], ["bash", "-c", startBus, "bus", conf]);
    children.push(bus);
    let address = "";
    bus.stdout!.on("data", (b: Buffer) => (address += b.toString()));
    await until(() => address.includes("\n"), 20_000);
    const env = [`DBUS_SYSTEM_BUS_ADDRESS=${address.trim()}`];
    const listener = inHost(env, ["bash", GUARD_SCRIPT_PATH, "--on-firewalld-reload"]);
    children.push(listener);
    let out = "";
    let err = "";
    listener.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    listener.stderr!.on("data", (b: Buffer) => (err += b.toString()));
    const ended = new Promise<number | null>((resolve) => listener.once("exit", resolve));
    try {
      await until(() => err.includes("Monitoring bus message stream."), 20_000);
      expect(out).toBe(""); // its first round found everything in place
      await sh("iptables -D FORWARD -j DOCKER-USER && iptables -F DOCKER-USER && iptables -X DOCKER-USER");
      const after = await foreign();
      expect(await access()).toEqual([true, true]);
      const signal = inHost(env, [
        "dbus-send",
        "--system",
        "--type=signal",
        "/org/fedoraproject/FirewallD1",
        "org.fedoraproject.FirewallD1.Reloaded",
      ]);
      expect(await new Promise((resolve) => signal.once("exit", resolve))).toBe(0);
      await until(() => out.includes("FORWARD did not jump to DOCKER-USER first"), 20_000);
      expect(out).toContain("chain DOCKER-USER was missing: created");
      expect(await access()).toEqual([true, false]);
      expect(await foreign()).toEqual(after);
    } finally {
      // The bus goes first: busctl ends with it, and so does the listener (its unit would restart it).
      bus.kill("SIGTERM");
    }
    expect(await ended).toBe(1);
    expect(err).toContain("dpa-guard: busctl monitor ended; no longer listening for firewalld reloads");
  });

  test("the timer's loop puts them back by itself, within its interval", async () => {
    const child = spawn(
      "nsenter",
      ["-t", String(h.nsPid), "-n", "-m", "--", "bash", GUARD_SCRIPT_PATH, "--loop", "1"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    children.push(child);
    let out = "";
    child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    let err = "";
    child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
    try {
      await sh("iptables -F DOCKER-USER");
      const flushed = Date.now();
      await until(() => out.includes("dpa-guard: restored"), 20_000);
      expect(Date.now() - flushed).toBeLessThan(10_000);
      expect(await access()).toEqual([true, false]);
      expect(err).toBe("");
    } finally {
      child.kill("SIGTERM");
    }
  });

  test("deleting the last allowlist removes the guard", async () => {
    const o = await converge(conn(), null, web, { claim: { ...claim, operation: "delete" } });
    expect(o.guard).toMatchObject({ removed: true, failed: [] });
    expect(await sh(`ls -A ${"/var/lib/docker-port-allowlist"}`)).toBe("");
    expect(await access()).toEqual([true, true]);
  });
});
