/**
 * The undo payload (provider/core/rollback.ts): exact text for hand-made snapshots, and that
 * restoring it over the applied state gives the snapshot back (restore simulator as oracle).
 */
import { renderRollback } from "../../provider/core";
import { applyPayload } from "./support/simulate";

import { WEB_STATE as before, WEB_TAG as T } from "./support/fixtures";

describe("renderRollback", () => {
  test("restores the owned chain verbatim from the snapshot, and nothing the payload did not touch", () => {
    expect(renderRollback(before, "*filter\n:DPA-web - [0:0]\nCOMMIT\n", "web")).toBe(
      [
        "*filter",
        ":DPA-web - [0:0]",
        `-A DPA-web -s 198.18.1.0/24 ${T} -j RETURN`,
        `-A DPA-web -s 198.18.2.7/32 ${T} -j RETURN`,
        `-A DPA-web ${T} -j DROP`,
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  test("never flushes DOCKER-USER: a foreign rule added while the payload applied survives the rollback", () => {
    const jump = `-p tcp -m conntrack --ctorigdstport 8080 ${T} -j DPA-web`;
    const payload = `*filter\n:DPA-web - [0:0]\n-D DOCKER-USER ${jump}\n-X DPA-web\nCOMMIT\n`;
    const text = renderRollback(before, payload, "web");
    expect(text).not.toContain(":DOCKER-USER");
    expect(text).toContain(`-I DOCKER-USER 1 ${jump}`);
    // Someone inserts a rule at the top between our read and our restore; then we roll back.
    const raced = applyPayload(
      before,
      "*filter\n-I DOCKER-USER 1 -s 203.0.113.9/32 -j DROP\nCOMMIT\n",
      "ipv4",
    );
    const undone = applyPayload(applyPayload(raced, payload, "ipv4"), text, "ipv4");
    const du = (t: string) => t.split("\n").filter((l) => l.startsWith("-A DOCKER-USER "));
    expect(du(undone)).toEqual([
      `-A DOCKER-USER ${jump}`,
      "-A DOCKER-USER -s 203.0.113.9/32 -j DROP",
      "-A DOCKER-USER -s 198.18.77.0/24 -j DROP",
    ]);
  });

  test("deletes a chain the snapshot lacked, and first the FORWARD jump the payload added", () => {
    const bare = "*filter\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\nCOMMIT\n";
    const payload =
      '*filter\n:DOCKER-USER - [0:0]\n-I FORWARD 1 -m comment --comment "dpa::forward" -j DOCKER-USER\nCOMMIT\n';
    expect(renderRollback(bare, payload, "web")).toBe(
      [
        "*filter",
        '-D FORWARD -m comment --comment "dpa::forward" -j DOCKER-USER',
        ":DOCKER-USER - [0:0]",
        ":DPA-web - [0:0]",
        "-X DPA-web",
        "-X DOCKER-USER",
        "COMMIT",
        "",
      ].join("\n"),
    );
  });
});

describe("renderRollback and INPUT (the docker-proxy jumps)", () => {
  const J = `! -i lo -p tcp -m tcp --dport 8080 ${T} -j DPA-web`;
  const withInput = before
    .replace(":FORWARD DROP [0:0]", ":INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:ufw-before-input - [0:0]")
    .replace(
      "-A FORWARD",
      `-A INPUT -i lo -j ACCEPT\n-A INPUT -j ufw-before-input\n-A INPUT ${J}\n-A FORWARD`,
    );

  test("deletes the jumps the payload inserted by spec and re-inserts the ones it deleted where they were", () => {
    const payload = `*filter\n-D INPUT 3\n-I INPUT 1 ${J}\n-I INPUT 1 -p udp -m udp --dport 53 ${T} -j DPA-web\nCOMMIT\n`;
    const text = renderRollback(withInput, payload, "web");
    expect(text.split("\n").filter((l) => l.includes("INPUT"))).toEqual([
      `-D INPUT ${J}`,
      `-D INPUT -p udp -m udp --dport 53 ${T} -j DPA-web`,
      `-I INPUT 3 ${J}`,
    ]);
    // Never a flush of INPUT, which other tools share.
    expect(text).not.toContain(":INPUT");
  });

  test.each([
    [
      "a create",
      `*filter\n:DPA-new - [0:0]\n-I INPUT 1 ! -i lo -p udp -m udp --dport 53 -m comment --comment "dpa:new" -j DPA-new\nCOMMIT\n`,
      "new",
    ],
    ["a moved jump", `*filter\n-D INPUT 3\n-I INPUT 1 ${J}\nCOMMIT\n`, "web"],
    ["a delete", `*filter\n:DPA-web - [0:0]\n-D DOCKER-USER 1\n-D INPUT 3\n-X DPA-web\nCOMMIT\n`, "web"],
  ])("%s: gives INPUT back rule for rule", (_name, payload, ruleName) => {
    const input = (text: string) => text.split("\n").filter((l) => l.startsWith("-A INPUT "));
    const after = applyPayload(withInput, payload, "ipv4");
    expect(input(after)).not.toEqual(input(withInput));
    const undone = applyPayload(after, renderRollback(withInput, payload, ruleName, "ipv4"), "ipv4");
    expect(input(undone)).toEqual(input(applyPayload(withInput, "*filter\nCOMMIT\n", "ipv4")));
  });
});

describe("renderRollback, applied over the state its payload produced", () => {
  const pick = (text: string) =>
    text
      .split("\n")
      .filter((l) => /^-A (FORWARD|DOCKER-USER|DPA-web) /.test(l) || /^:(DOCKER-USER|DPA-web) /.test(l))
      .map((l) => l.replace(/ \[\d+:\d+\]$/, ""));

  test.each([
    [
      "a rewritten chain and a moved jump",
      [
        "*filter",
        ":DPA-web - [0:0]",
        "-D DOCKER-USER 1",
        `-I DOCKER-USER 1 -p udp -m conntrack --ctorigdstport 53 ${T} -j DPA-web`,
        `-A DPA-web -s 198.18.3.0/24 ${T} -j RETURN`,
        `-A DPA-web ${T} -j DROP`,
        "COMMIT",
        "",
      ].join("\n"),
    ],
    [
      "a deleted allowlist",
      ["*filter", ":DPA-web - [0:0]", "-D DOCKER-USER 1", "-X DPA-web", "COMMIT", ""].join("\n"),
    ],
  ])("%s: gives the snapshot's rules back", (_name, payload) => {
    const after = applyPayload(before, payload, "ipv4");
    expect(pick(after)).not.toEqual(pick(applyPayload(before, "*filter\nCOMMIT\n", "ipv4")));
    const undone = applyPayload(after, renderRollback(before, payload, "web", "ipv4"), "ipv4");
    expect(pick(undone)).toEqual(pick(applyPayload(before, "*filter\nCOMMIT\n", "ipv4")));
  });
});
