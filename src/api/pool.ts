/**
 * undici's Pool without the rest of undici. `import { Pool } from 'undici'` loads all of it (fetch,
 * WebSocket, caches, mocks: 111 files), ~9 MB of an idle keeper's resident set; the client needs a Pool
 * and its `request()`. These are internal paths of undici, which package.json pins exactly;
 * test/unit/api-pool.test.ts checks that they are the very objects undici exports, so an upgrade that
 * moves them fails there, not in production.
 */
import { createRequire } from 'node:module';
import type { Pool as UndiciPool } from 'undici';

const require = createRequire(import.meta.url);
const Dispatcher = require('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
// What undici's own index.js does to give every dispatcher request(), stream(), pipeline(), ...
Object.assign(Dispatcher.prototype, require('undici/lib/api/index.js') as object);

export const Pool = require('undici/lib/dispatcher/pool.js') as typeof UndiciPool;
