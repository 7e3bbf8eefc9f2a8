// Removes dist/ before a build so that a renamed or deleted module leaves no stale output.
import { rmSync } from "node:fs";

rmSync(new URL("../dist", import.meta.url), { recursive: true, force: true });
