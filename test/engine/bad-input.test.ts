/**
 * Bad input and bad hosts through the REAL Pulumi CLI: every case fails with a message naming
 * the field or host, the bad value's problem and the fix, and the host's rules (all tables)
 * and saved rules files stay exactly as they were.
 */
import { comparableSave, startLab, type Lab, type LabHost } from "../../lab";
import { allowlistProject, buildPackage, PulumiProject } from "./support";
import { DOCKER_PORT_ALLOWLIST_TYPE } from "../../provider/pulumi/resource";

jest.setTimeout(900_000);

let lab: Lab;
let proj: PulumiProject;
let good: LabHost;
let noDockerUser: LabHost;

async function hostState(h: LabHost): Promise<string> {
  const r = await lab.hostExec(
    h,
    "iptables-save; ip6tables-save; ls -A /etc/iptables; cat /etc/iptables/* 2>/dev/null",
  );
  return comparableSave(r.stdout);
}

function web(h: LabHost, args: Record<string, unknown> = {}, connection: Record<string, unknown> = {}) {
  return {
    name: "web",
    args: {
      connection: { host: h.ipv4, hostKey: h.hostKey, ...connection },
      port: 8080,
      sources: ["198.18.200.0/24"],
      ...args,
    },
  };
}

/** Runs `pulumi up` with these allowlists; it must fail; returns everything it printed. */
async function failingUp(allowlists: unknown[]): Promise<string> {
  await proj.setConfig("allowlists", JSON.stringify(allowlists));
  const r = await proj.run(["up", "--yes"], { check: false });
  expect(r.code).not.toBe(0);
  return r.stdout + r.stderr;
}

let before: { good: string; noDockerUser: string };

beforeAll(async () => {
  const packageDir = buildPackage();
  lab = await startLab({ docker: 0, light: 2, clients: 0 });
  [good, noDockerUser] = lab.hosts;
  const r = await lab.hostExec(
    noDockerUser,
    "iptables -D FORWARD -j DOCKER-USER && iptables -F DOCKER-USER && iptables -X DOCKER-USER",
  );
  expect(r.code).toBe(0);
  before = { good: await hostState(good), noDockerUser: await hostState(noDockerUser) };
  proj = await allowlistProject(lab, packageDir, "[]");
});

afterEach(async () => {
  expect(await hostState(good)).toBe(before.good);
  expect(await hostState(noDockerUser)).toBe(before.noDockerUser);
  expect((await proj.resources(DOCKER_PORT_ALLOWLIST_TYPE)).length).toBe(0);
});

afterAll(async () => {
  await proj?.dispose();
  await lab?.down();
});

describe("bad input never reaches a host", () => {
  test("an invalid CIDR names the source, the value and what is allowed", async () => {
    const out = await failingUp([web(good, { sources: ["198.18.1.0/33"] })]);
    expect(out).toMatch(/sources\[0\]/);
    expect(out).toContain("198.18.1.0/33");
  });

  test("port 0 is refused", async () => {
    const out = await failingUp([web(good, { port: 0 })]);
    expect(out).toMatch(/port 0 is out of range|port 0/);
    expect(out).toContain("docker run -p HOST:CONTAINER");
  });

  test("shell injection in every string field is refused by check, field by field", async () => {
    const evil = "$(touch /tmp/dpa-pwned)";
    // One resource with every string field poisoned: check reports each field at once (the
    // engine stops at the first resource that fails check, so one resource carries them all).
    const evilArgs = {
      connection: {
        host: `${good.ipv4};${evil}`,
        user: `root${evil}`,
        hostKey: `${good.hostKey}'${evil}`,
        agentSocketPath: `/tmp/a;${evil}`,
        proxy: { host: `x${evil}` },
      },
      ruleName: `w${evil}`,
      sources: [`198.18.1.0/24;${evil}`],
      originalDestination: `198.18.0.10${evil}`,
      action: `DROP${evil}`,
      ipv6: `on${evil}`,
      rulesV4Path: `/etc/iptables/rules.v4;${evil}`,
      rulesV6Path: `/etc/iptables/$(id)`,
      port: `8080${evil}`,
      protocols: [`tcp${evil}`],
    };
    const out = await failingUp([{ name: "evil", args: evilArgs }]);
    for (const property of [
      "connection.host",
      "connection.user",
      "connection.hostKey",
      "connection.agentSocketPath",
      "connection.proxy.host",
      "ruleName",
      "sources[0]",
      "originalDestination",
      "action",
      "ipv6",
      "rulesV4Path",
      "rulesV6Path",
      "port",
      "protocols[0]",
    ]) {
      // The engine prints each check failure as "property <name> value {...} has a problem: ...".
      expect(out).toContain(`property ${property} value`);
    }
    expect(
      (await lab.hostExec(good, "test -e /tmp/dpa-pwned && echo PWNED || echo clean")).stdout.trim(),
    ).toBe("clean");
  });
});

describe("bad hosts are refused before anything changes", () => {
  test("an address where nobody answers: bounded retries, then a clear error", async () => {
    const absent = good.ipv4.replace(/\.\d+$/, ".190");
    const started = Date.now();
    const out = await failingUp([web(good, {}, { host: absent, dialErrorLimit: 2, perDialTimeout: 2 })]);
    expect(out).toContain(`could not connect to root@${absent}:22 after 2 attempt(s)`);
    // Not minutes of silence: the failed dial was shown while the next one was on its way.
    expect(out).toMatch(
      new RegExp(
        `\\(create\\): dial 1/2 to root@${absent.replace(/\./g, "\\.")}:22 failed \\(.+\\); next try in \\d+\\.\\d s`,
      ),
    );
    expect(Date.now() - started).toBeLessThan(120_000);
  });

  test("a wrong host key shows the expected and the presented fingerprint", async () => {
    const out = await failingUp([web(good, {}, { hostKey: noDockerUser.hostKeyFingerprint })]);
    expect(out).toContain(
      `host key mismatch for root@${good.ipv4}:22: expected ${noDockerUser.hostKeyFingerprint}`,
    );
    expect(out).toContain(`the host presented ${good.hostKeyFingerprint}`);
  });

  test("a user whose sudo needs a password is told to use NOPASSWD or root", async () => {
    const out = await failingUp([web(good, {}, { user: lab.users.sudoPassword })]);
    expect(out).toContain(`user ${lab.users.sudoPassword} needs a password for sudo`);
    expect(out).toContain("NOPASSWD");
  });

  test("a host without DOCKER-USER names the cause and the fix", async () => {
    const out = await failingUp([web(noDockerUser)]);
    expect(out).toContain(`host ${noDockerUser.ipv4}: the iptables chain DOCKER-USER does not exist`);
    expect(out).toContain("Fix: start Docker");
  });

  test("no error message ever contains the private key", async () => {
    const out = await failingUp([web(good, {}, { user: lab.users.sudoPassword })]);
    expect(out).not.toContain(lab.clientKey.privateKey.split("\n")[1]);
  });
});
