#!/usr/bin/env -S node --max-semi-space-size=1
// The flags are src/server/workers/node-flags.ts's NODE_FLAGS (test/server/node-flags.test.ts keeps them equal).
// The CLI is compiled to dist/ by `npm run build` (run by `npm install` through the prepare script).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv, process.env);
