// A client that must stay out, knocking all the time: every INTERVAL ms it opens a new TCP
// connection to HOST:PORT (each attempt times out after TIMEOUT ms) and counts the ones that
// connect. Run inside a client namespace by lab/watch.ts.
//   node lab/knocker.js HOST PORT [INTERVAL_MS] [TIMEOUT_MS]
// Prints "ready" once its first attempt has ended (either way), "open <ms>" for each attempt
// that connected, and on SIGTERM one line "done {attempts, opened}" before it exits.
"use strict";
const net = require("node:net");
const { setInterval, clearInterval } = require("node:timers");

const [host, port, interval = "100", timeout = "1000"] = process.argv.slice(2);
let attempts = 0;
let opened = 0;
let ready = false;
const t0 = Date.now();

function attempt() {
  attempts += 1;
  const s = net.connect({ host, port: Number(port) });
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    s.destroy();
    if (!ready) {
      ready = true;
      process.stdout.write("ready\n");
    }
  };
  s.setTimeout(Number(timeout), end);
  s.on("connect", () => {
    opened += 1;
    process.stdout.write(`open ${Date.now() - t0}\n`);
    end();
  });
  s.on("error", end);
}

const timer = setInterval(attempt, Number(interval));
attempt();
process.on("SIGTERM", () => {
  clearInterval(timer);
  process.stdout.write(`done ${JSON.stringify({ attempts, opened })}\n`);
  process.exit(0);
});
