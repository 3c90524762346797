import { bytesOf, hostText, printable } from "../../provider/core";

describe("printable: nothing a host prints can drive the terminal", () => {
  test.each([
    ["plain text, newlines and tabs stay", "a\tb\nc", "a\tb\nc"],
    ["a CSI sequence goes whole", "x\x1b[2J\x1b[1;31mred\x1b[0m", "xred"],
    ["an OSC title ended by BEL goes whole", "\x1b]0;owned\x07ok", "ok"],
    ["an OSC ended by ST goes whole", "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"],
    ["a two-character escape goes", "a\x1bcb", "ab"],
    ["carriage return, backspace, bell and DEL go", "ok\rFAIL\b\x07\x7f", "okFAIL"],
    ["8-bit CSI and other C1 controls go", "a\u009b2Jb\u0085c", "abc"],
    ["a lone ESC at the end goes", "tail\x1b", "tail"],
    ["other Unicode stays", "café 🚀", "café 🚀"],
  ])("%s", (_name, input, expected) => {
    expect(printable(input)).toBe(expected);
    expect(printable(printable(input))).toBe(expected);
  });
});

describe("hostText: a host's byte string as a person sees it", () => {
  test("valid UTF-8 bytes show as their characters", () => {
    expect(hostText(Buffer.from("comment 🚀 é", "utf8").toString("latin1"))).toBe("comment 🚀 é");
  });

  test("bytes that are not UTF-8 show as U+FFFD in the message only", () => {
    expect(hostText("a\xff\xfeb")).toBe("a\ufffd\ufffdb");
  });

  test("an 8-bit CSI encoded as UTF-8 is dropped whole after decoding", () => {
    expect(hostText(Buffer.from("x\u009b2Jy\x1b[Hz", "utf8").toString("latin1"))).toBe("xyz");
  });
});

describe("bytesOf", () => {
  test("a byte string is its bytes", () => {
    expect([...bytesOf("A\xff\x00")]).toEqual([0x41, 0xff, 0x00]);
  });

  test("text beyond U+00FF is refused, never silently cut to 8 bits", () => {
    expect(() => bytesOf("x🚀")).toThrow(
      /is not a byte: everything sent to a host is ASCII or bytes the host printed/,
    );
  });
});
