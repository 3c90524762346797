/**
 * The restore-format writer (provider/core/restore.ts): one line per call, in call order, inside
 * `*table ... COMMIT`, and nothing that could split into another command.
 */
import { RestoreBuilder } from "../../provider/core";

const T = '-m comment --comment "dpa:web"';

describe("RestoreBuilder", () => {
  test.each<[string, (b: RestoreBuilder) => RestoreBuilder, string]>([
    ["a chain declaration", (b) => b.declareChain("DPA-web"), ":DPA-web - [0:0]"],
    [
      "an append",
      (b) => b.append("DPA-web", `-s 198.18.1.0/24 ${T} -j RETURN`),
      `-A DPA-web -s 198.18.1.0/24 ${T} -j RETURN`,
    ],
    [
      "an insert at a position",
      (b) => b.insert("FORWARD", 1, "-j DOCKER-USER"),
      "-I FORWARD 1 -j DOCKER-USER",
    ],
    [
      "a delete by rule",
      (b) => b.deleteRule("FORWARD", `${T} -j DOCKER-USER`),
      `-D FORWARD ${T} -j DOCKER-USER`,
    ],
    ["a chain deletion", (b) => b.deleteChain("DPA-web"), "-X DPA-web"],
    ["an append of a rule without matches or target", (b) => b.append("DPA-web", ""), "-A DPA-web"],
    [
      "an IPv6 rule, kept byte for byte",
      (b) => b.append("DPA-web", `-s 2001:db8::/32 ${T} -j REJECT --reject-with icmp6-port-unreachable`),
      `-A DPA-web -s 2001:db8::/32 ${T} -j REJECT --reject-with icmp6-port-unreachable`,
    ],
  ])("writes %s as one line inside *filter ... COMMIT", (_name, write, line) => {
    const b = new RestoreBuilder().startTransaction("filter");
    expect(write(b).endTransaction().build()).toBe(`*filter\n${line}\nCOMMIT\n`);
  });

  test("keeps the order the lines were written in, across transactions", () => {
    const text = new RestoreBuilder()
      .startTransaction("filter")
      .deleteRule("FORWARD", "-j DOCKER-USER")
      .declareChain("DOCKER-USER")
      .declareChain("DPA-web")
      .deleteRule("DOCKER-USER", "-j DPA-old")
      .insert("DOCKER-USER", 1, "-j DPA-web")
      .append("DPA-web", "-j DROP")
      .deleteChain("DPA-old")
      .endTransaction()
      .startTransaction("raw")
      .endTransaction()
      .build();
    expect(text).toBe(
      [
        "*filter",
        "-D FORWARD -j DOCKER-USER",
        ":DOCKER-USER - [0:0]",
        ":DPA-web - [0:0]",
        "-D DOCKER-USER -j DPA-old",
        "-I DOCKER-USER 1 -j DPA-web",
        "-A DPA-web -j DROP",
        "-X DPA-old",
        "COMMIT",
        "*raw",
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  test.each<[string, (b: RestoreBuilder) => unknown, RegExp]>([
    ["a line outside a transaction", (b) => b.append("DPA-web", "-j DROP"), /outside a transaction/],
    ["COMMIT outside a transaction", (b) => b.endTransaction(), /COMMIT without a transaction/],
    [
      "a transaction inside another",
      (b) => b.startTransaction("filter").startTransaction("nat"),
      /still open/,
    ],
    ["text without COMMIT", (b) => b.startTransaction("filter").build(), /not ended \(no COMMIT\)/],
    [
      "a rule that spans two lines",
      (b) => b.startTransaction("filter").append("DPA-web", "-j DROP\n-F INPUT"),
      /spans lines/,
    ],
    [
      "a chain name with a space",
      (b) => b.startTransaction("filter").declareChain("DPA web"),
      /not a chain name/,
    ],
    [
      "a chain name with a newline",
      (b) => b.startTransaction("filter").deleteChain("X\nCOMMIT"),
      /not a chain name/,
    ],
    [
      "an empty chain name",
      (b) => b.startTransaction("filter").deleteRule("", "-j DROP"),
      /not a chain name/,
    ],
    ["a table name with a quote", (b) => b.startTransaction('fil"ter'), /not a table name/],
    ["rule position 0", (b) => b.startTransaction("filter").insert("FORWARD", 0, "-j DROP"), /integer >= 1/],
    [
      "a fractional rule position",
      (b) => b.startTransaction("filter").insert("FORWARD", 1.5, "-j DROP"),
      /integer >= 1/,
    ],
  ])("refuses %s", (_name, misuse, message) => {
    expect(() => misuse(new RestoreBuilder())).toThrow(message);
  });

  test("builds nothing when nothing was written", () => {
    expect(new RestoreBuilder().build()).toBe("");
  });
});
