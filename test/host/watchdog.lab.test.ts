/**
 * Kill at every step (issue 9), against real iptables over real SSH: the sync script stopped at a
 * pause point, then its whole process group SIGKILLed while it waits for the commit (nothing of
 * the script is left to roll back: its detached watchdog does), or the SSH connection dropped
 * between the IPv4 and the IPv6 restore (the script rolls back on EOF). The host ends exactly in
 * its old state in both families, foreign rules included, and the next sync converges. The
 * unit matrix (./watchdog.test.ts) covers every point both ways on a stub host.
 */
import { comparableSave, startLab, type Lab, type LabHost } from "../../lab";
import { planAllowlist, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import { SshSession, syncHost, type Connect, type HostExec } from "../../provider/host";
import type { ConnectionArgs } from "../../provider/args";
import { hostError, syncOptions } from "./support";

jest.setTimeout(180_000);

let lab: Lab;
let h: LabHost;
beforeAll(async () => {
  // docker29's light layout has an ip6tables DOCKER-USER: both families change.
  lab = await startLab({ docker: 0, light: 1, clients: 0, ipv6: true, lightLayout: "docker29" });
  h = lab.hosts[0];
});
/** Pause dirs made on the host: removed after each test, so a failed one leaves no script paused. */
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await lab.hostExec(h, `rm -rf '${d}'`);
});
afterAll(async () => {
  await lab?.down();
});

async function pauseDir(): Promise<string> {
  const dir = (await sh("mktemp -d /run/dpa-pause.XXXXXX")).trim();
  dirs.push(dir);
  return dir;
}

function conn(): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

function spec(ruleName: string): AllowlistSpec {
  const v = validateAllowlist(
    { port: 8080, sources: ["198.18.9.0/24", "2001:db8:9::/48"], ruleName, persist: false },
    ruleName,
  );
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

async function sh(cmd: string): Promise<string> {
  const r = await lab.hostExec(h, cmd);
  if (r.code !== 0) throw new Error(`${cmd} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Both filter tables, comparable (no counters, no comments). */
async function filters(): Promise<{ v4: string; v6: string }> {
  return {
    v4: comparableSave(await sh("iptables-save -t filter")),
    v6: comparableSave(await sh("ip6tables-save -t filter")),
  };
}

/** Resolves once `check` (a command on the host) succeeds. */
async function until(check: string, within = 60_000): Promise<void> {
  const end = Date.now() + within;
  while ((await lab.hostExec(h, check)).code !== 0) {
    if (Date.now() > end) throw new Error(`never true on the host: ${check}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** The pid the script wrote on reaching `point` in `dir`. */
async function reached(dir: string, point: string): Promise<number> {
  await until(`grep -q . '${dir}/${point}.reached'`);
  return Number((await sh(`cat '${dir}/${point}.reached'`)).trim());
}

/** A foreign rule in both families that no rollback may touch. */
async function addForeign(): Promise<void> {
  await sh("iptables -w -A DOCKER-USER -s 203.0.113.7/32 -j DROP");
  await sh("ip6tables -w -A DOCKER-USER -s 2001:db8:ff::7/128 -j DROP");
}

test("SIGKILL of the script's whole process group while it awaits the commit: the watchdog restores both families", async () => {
  await addForeign();
  const before = await filters();
  const dir = await pauseDir();
  await sh(`touch '${dir}/awaiting-commit'`);
  let killed = "";
  const err = await hostError(
    syncHost(
      conn(),
      syncOptions(spec("wdkill"), {
        pauseDir: dir,
        beforeCommit: async () => {
          const pid = await reached(dir, "awaiting-commit");
          // Applied in both families, not committed.
          expect((await filters()).v6).toContain(":DPA-wdkill ");
          const pgid = (await sh(`awk '{ print $5 }' /proc/${pid}/stat`)).trim();
          killed = pgid;
          await sh(`bash -c 'kill -KILL -- -${pgid}'`);
        },
      }),
    ),
  );
  expect(killed).not.toBe("");
  expect(err.message).toMatch(/the sync script was killed.* before the commit/);
  // The watchdog holds the host lock until it has rolled back.
  await until("flock -n /run/docker-port-allowlist.lock true");
  expect(await filters()).toEqual(before);
  expect((await lab.hostExec(h, "test -e /run/docker-port-allowlist/unknown.wdkill")).code).not.toBe(0);

  const again = await syncHost(conn(), syncOptions(spec("wdkill")));
  expect(again.applied).toBe(true);
  const now = await filters();
  expect(planAllowlist({ ipv4: now.v4, ipv6: now.v6 }, spec("wdkill"), "wdkill").inSync).toBe(true);
  expect(now.v4).toContain("-A DOCKER-USER -s 203.0.113.7/32 -j DROP");
  await syncHost(conn(), syncOptions("wdkill"));
});

test("the SSH connection dropped between the IPv4 and the IPv6 restore: the script rolls back IPv4 on EOF", async () => {
  const before = await filters();
  const dir = await pauseDir();
  await sh(`touch '${dir}/between-families'`);
  let session: HostExec | undefined;
  const connect: Connect = async (c, o) => (session = await SshSession.open(c, o));
  const running = hostError(syncHost(conn(), syncOptions(spec("wddrop"), { pauseDir: dir, connect })));
  await reached(dir, "between-families");
  expect((await filters()).v4).toContain(":DPA-wddrop ");
  session!.destroy();
  const err = await running;
  expect(err.message).toMatch(/SSH connection was lost/);
  await sh(`rm -f '${dir}/between-families'`);

  await until("flock -n /run/docker-port-allowlist.lock true");
  expect(await filters()).toEqual(before);

  const again = await syncHost(conn(), syncOptions(spec("wddrop")));
  expect(again.applied).toBe(true);
  const now = await filters();
  expect(planAllowlist({ ipv4: now.v4, ipv6: now.v6 }, spec("wddrop"), "wddrop").inSync).toBe(true);
  await syncHost(conn(), syncOptions("wddrop"));
});
