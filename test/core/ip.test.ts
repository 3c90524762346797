/**
 * Addresses: parsing is strict, and formatting matches the C library's inet_ntop (which
 * iptables-save uses) exactly; checked against the real libc through perl's Socket module.
 */
import { execFileSync } from "child_process";
import fc from "fast-check";
import { compareCidr, formatCidr, parseCidr } from "../../provider/core";
import { formatIpv6, parseIpv4, parseIpv6 } from "../../provider/core/ip";

/** 128-bit values biased towards runs of zero groups, where the spelling rules differ. */
const ipv6Value = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), {
    minLength: 8,
    maxLength: 8,
  })
  .map((groups) => groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n));

describe("formatIpv6", () => {
  it("spells every address exactly like libc inet_ntop", () => {
    const values = fc.sample(ipv6Value, 3000);
    values.push(0n, 1n, 5n, 0xffff01020304n, 0x01020304n, (0x20010db8n << 96n) | 1n);
    const hex = values.map((v) => v.toString(16).padStart(32, "0")).join("\n");
    const libc = execFileSync(
      "perl",
      ["-MSocket=inet_ntop,AF_INET6", "-ne", 'chomp; print inet_ntop(AF_INET6, pack("H32", $_)), "\\n"'],
      { input: `${hex}\n`, encoding: "utf8" },
    ).split("\n");
    values.forEach((v, i) => expect([v.toString(16), formatIpv6(v)]).toEqual([v.toString(16), libc[i]]));
  });

  it("parses back what it prints", () => {
    fc.assert(fc.property(ipv6Value, (v) => parseIpv6(formatIpv6(v)) === v));
  });
});

describe("parseCidr", () => {
  it.each([
    ["198.18.1.7/24", "198.18.1.0/24"],
    ["198.18.1.7", "198.18.1.7/32"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["2001:DB8:0:0::7", "2001:db8::7/128"],
    ["2001:db8::ffff:1/64", "2001:db8::/64"],
    ["::ffff:198.18.0.1", "::ffff:198.18.0.1/128"],
    ["::", "::/128"],
  ])("normalises %s to %s", (input, expected) => {
    expect(formatCidr(parseCidr(input)!)).toBe(expected);
  });

  it.each([
    "198.18.1",
    "198.18.1.1.1",
    "198.18.01.1",
    "198.18.1.1/",
    "198.18.1.1/033",
    "198.18.1.1/-1",
    " 198.18.1.1",
    "2001:db8:::1",
    "2001:db8::1::2",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "12345::",
    "::1.2.3",
    "1.2.3.4::",
    "fe80::1%lo",
    "",
  ])("rejects %j", (input) => {
    expect(parseCidr(input)).toBeUndefined();
  });

  it("orders by address, then prefix", () => {
    const sorted = ["198.18.1.0/25", "198.18.0.0/16", "198.18.1.0/24"]
      .map((s) => parseCidr(s)!)
      .sort(compareCidr);
    expect(sorted.map(formatCidr)).toEqual(["198.18.0.0/16", "198.18.1.0/24", "198.18.1.0/25"]);
  });

  it("round-trips every IPv4 address", () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 0, max: 32 }), (ip, prefix) => {
        const c = parseCidr(`${ip}/${prefix}`)!;
        expect(parseCidr(formatCidr(c))).toEqual(c);
        expect(parseIpv4(ip)).toBeDefined();
      }),
    );
  });
});
