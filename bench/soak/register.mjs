// `node --import ./bench/soak/register.mjs bench/soak/soak.ts`: lets Node 20 run the soak's TypeScript
// (and the test harness and emulator sources it imports) without a build step or an extra dependency:
// ts-loader.mjs transpiles each .ts file with the project's own `typescript` (a devDependency).
import { register } from 'node:module';

register('./ts-loader.mjs', import.meta.url);
