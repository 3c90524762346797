/**
 * The lifecycle through the real engine on Debian 12's Docker 20.10, the compatibility leg: see
 * ./lifecycle.suite.ts.
 */
import { lifecycleSuite } from "./lifecycle.suite";

lifecycleSuite("20.10");
