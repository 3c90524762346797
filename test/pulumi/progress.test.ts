import { pacedProgress } from "../../provider/pulumi/progress";

/** A sink on a clock the test moves; returns the lines written. */
function paced(opts: { everyMs?: number; quietMs?: number } = {}) {
  let t = 1_000;
  const lines: string[] = [];
  const progress = pacedProgress('DockerPortAllowlist "web" (update)', {
    write: (l) => lines.push(l),
    now: () => t,
    ...opts,
  });
  return { progress, lines, at: (ms: number) => (t = 1_000 + ms) };
}

describe("pacedProgress", () => {
  test("a quick write says nothing: its phases come before the quiet time is over", () => {
    const p = paced();
    p.at(100);
    p.progress("applying 2 rule change(s)", "phase");
    p.at(900);
    p.progress("applied and verified; committing", "phase");
    expect(p.lines).toEqual([]);
  });

  test("a wait is shown at once, then at most one line per interval", () => {
    const p = paced();
    p.at(0);
    p.progress("dial 1/10 failed", "wait");
    p.at(500);
    p.progress("dial 2/10 failed", "wait");
    p.at(3_000);
    p.progress("dial 3/10 failed", "wait");
    p.at(5_999);
    p.progress("dial 4/10 failed", "wait");
    p.at(6_000);
    p.progress("dial 5/10 failed", "wait");
    expect(p.lines).toEqual([
      'DockerPortAllowlist "web" (update): dial 1/10 failed\n',
      'DockerPortAllowlist "web" (update): dial 3/10 failed\n',
      'DockerPortAllowlist "web" (update): dial 5/10 failed\n',
    ]);
  });

  test("a slow operation shows its phases, paced like the waits", () => {
    const p = paced({ everyMs: 2_000, quietMs: 4_000 });
    p.at(1_000);
    p.progress("waiting for the host lock", "wait");
    p.at(3_999);
    p.progress("applying", "phase"); // still within the quiet time
    p.at(4_000);
    p.progress("applying", "phase");
    p.at(5_000);
    p.progress("committing", "phase"); // within the interval after the last line
    expect(p.lines.map((l) => l.split(": ")[1])).toEqual(["waiting for the host lock\n", "applying\n"]);
  });
});
