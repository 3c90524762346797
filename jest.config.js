// Three projects so CI can run and count them separately:
//   unit   - pure logic, no root, no network (seconds)
//   lab    - real sshd, dockerd, iptables and traffic in network namespaces (root)
//   engine - the real Pulumi CLI and engine against the lab (root, built engine)
// Type errors fail the run: ts-jest type-checks every test file (isolatedModules off).
// Jest 29 ignores testTimeout inside a project, so lab and engine test files call
// jest.setTimeout themselves, sized to what they do.
const base = {
  preset: "ts-jest",
  testEnvironment: "node",
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json" }] },
};
module.exports = {
  projects: [
    {
      ...base,
      displayName: "unit",
      testMatch: ["<rootDir>/test/**/*.test.ts"],
      testPathIgnorePatterns: ["/test/lab/", "/test/engine/", "\\.lab\\.test\\.ts$"],
    },
    {
      ...base,
      displayName: "lab",
      testMatch: ["<rootDir>/test/**/*.lab.test.ts", "<rootDir>/test/lab/**/*.test.ts"],
    },
    {
      ...base,
      displayName: "engine",
      testMatch: ["<rootDir>/test/engine/**/*.test.ts"],
    },
  ],
};
