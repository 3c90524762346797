/**
 * The lifecycle through the real engine on Docker 29 with its (default) iptables backend: see
 * ./lifecycle.suite.ts.
 */
import { lifecycleSuite } from "./lifecycle.suite";

lifecycleSuite("29");
