#!/usr/bin/env node
// Entry point for the `ivm` bin: runs the TypeScript sources through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
await import(new URL('../src/cli.ts', import.meta.url).href);
