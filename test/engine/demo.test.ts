/**
 * The demo (scripts/demo.sh's main job) end to end: a lab of 3 Docker hosts, the root program
 * (Pulumi.yaml at the repository root) configured from stack config, the real CLI, and a traffic
 * matrix measured with real packets. The expectations below are written out by hand from the
 * embedded policy, so the test fails if the demo's own `expectedReach` were wrong too.
 */
import * as path from "path";

import { runDemo, type DemoResult } from "../../scripts/demo";
import { buildPackage, PulumiProject, repoRoot } from "./support";
import { DOCKER_PORT_ALLOWLIST_TYPE } from "../../provider/pulumi/resource";

jest.setTimeout(900_000);

describe("the root program with a bad stack config", () => {
  it("fails the preview listing every problem under its config key, before any resource exists", async () => {
    buildPackage();
    const proj = await PulumiProject.create({
      programDir: path.join(repoRoot, "program"),
      projectName: "docker-port-allowlist", // the namespace of the program's config keys
      config: {
        hosts: JSON.stringify([
          { name: "web-1", connection: { host: "198.18.0.10" } },
          { name: "web-2", connection: { user: "root" } },
        ]),
        policies: JSON.stringify([{ name: "web", port: 8080, sources: ["198.18.0.0/24", "office"] }]),
        connection: { value: JSON.stringify({ privateKey: "not-a-real-key" }), secret: true },
      },
    });
    try {
      const r = await proj.run(["preview", "--diff"]);
      expect(r.code).not.toBe(0);
      const text = r.stdout + r.stderr;
      expect(text).toContain("The stack configuration has 2 problems:");
      expect(text).toContain(
        "docker-port-allowlist:hosts[1].connection.host: is required (Address (IP or DNS name) of the host's SSH server).",
      );
      expect(text).toContain(
        'docker-port-allowlist:policies[0].sources[1]: "office" is not an IPv4/IPv6 address or CIDR',
      );
      // A RunError: the message alone, no stack trace of the program; and no allowlist was planned.
      expect(text).not.toMatch(/at Object\.<anonymous>|program\/index\.ts:\d+/);
      expect(text).not.toContain(DOCKER_PORT_ALLOWLIST_TYPE);
      expect(text).not.toContain("not-a-real-key");
    } finally {
      await proj.dispose();
    }
  });
});

let result: DemoResult;
const log: string[] = [];

describe("the demo", () => {
  beforeAll(async () => {
    result = await runDemo({ log: (line) => log.push(line) });
  });

  afterAll(() => {
    // The demo's own progress output, for a failing CI run.
    if (result === undefined || result.problems.length > 0) process.stdout.write(log.join("\n") + "\n");
  });

  /** measured reachability as "client host port" -> open? */
  const measured = (cells: DemoResult["after"]) =>
    Object.fromEntries(cells.map((c) => [`${c.client} ${c.host} ${c.port}`, c.measured]));

  test("runs without a single problem", () => {
    expect(result.problems).toEqual([]);
  });

  test("before any allowlist every client reaches every published port", () => {
    expect(result.before).toHaveLength(18);
    expect(result.before.every((c) => c.measured)).toBe(true);
  });

  test("after up, real traffic matches the policy, the override and the host that skips a policy", () => {
    const open = (client: number, host: number, port: number) => `client-${client} docker-${host} ${port}`;
    const m = measured(result.after);
    const expected: Record<string, boolean> = {};
    for (const h of [1, 2, 3]) {
      expected[open(1, h, 8080)] = true; // web: client-1 everywhere
      expected[open(2, h, 8080)] = false;
      expected[open(3, h, 8080)] = h === 3; // the per-host override on docker-3
      expected[open(1, h, 5353)] = h === 3; // dns: client-2 only; docker-3 does not apply dns
      expected[open(2, h, 5353)] = true;
      expected[open(3, h, 5353)] = h === 3;
    }
    expect(m).toEqual(expected);
    expect(result.outbound.map((o) => o.open)).toEqual([true, true, true]);
  });

  test("the unpolicedPorts output names the one published port no policy covers: 5353/udp on docker-3", () => {
    expect(result.unpoliced).toEqual({
      "docker-1": [],
      "docker-2": [],
      "docker-3": [
        expect.stringMatching(/^5353\/udp ipv4 -> 172\.17\.0\.\d+:53$/),
        // docker-proxy serves the IPv4-only container on the host's IPv6 sockets too.
        expect.stringMatching(/^5353\/udp ipv6 \(docker-proxy\) -> 172\.17\.0\.\d+:53$/),
      ],
    });
  });

  test("preview --diff showed the exact rule lines of the canary's allowlists", () => {
    expect(result.preview).toMatch(
      /-A DPA-web -s 198\.\d+\.\d+\.200\/32 -m comment --comment \\"dpa:web\\" -j RETURN/,
    );
    expect(result.preview).toContain(
      '-A DPA-dns -m comment --comment \\"dpa:dns\\" -j REJECT --reject-with icmp-port-unreachable',
    );
  });

  test("a second up changed nothing; the foreign rule survived; destroy left no rule behind", () => {
    expect(result.secondUpNoChanges).toBe(true);
    expect(result.foreignRuleIntact).toBe(true);
    expect(result.cleanAfterDestroy).toBe(true);
  });
});
