// Preload for node processes a benchmark wants profiled (NODE_OPTIONS="--require <this file>",
// DPA_PROF_DIR=<dir>; node 20 refuses --cpu-prof in NODE_OPTIONS). Writes a V8 CPU profile of
// the process every 2 s (`p-<pid>-<n>.cpuprofile`): the engine ends the dynamic-provider process
// without letting it exit, so nothing may wait for the end. Sum a process's files to read it.
/* global setInterval */
"use strict";
const inspector = require("inspector");
const fs = require("fs");
const dir = process.env.DPA_PROF_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  let n = 0;
  const flush = () =>
    session.post("Profiler.stop", (err, r) => {
      if (!err)
        fs.writeFileSync(
          `${dir}/p-${process.pid}-${String(n++).padStart(4, "0")}.cpuprofile`,
          JSON.stringify(r.profile),
        );
      session.post("Profiler.start");
    });
  session.post("Profiler.enable", () => session.post("Profiler.start"));
  setInterval(flush, 2000).unref();
  process.on("exit", flush);
}
