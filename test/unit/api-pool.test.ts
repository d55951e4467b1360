import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/api/pool.js';

describe('the narrowed undici import (src/api/pool.ts)', () => {
  it('is the very Pool that undici exports, with request()', async () => {
    const undici = await import('undici');
    expect(Pool).toBe(undici.Pool);
    expect(typeof Pool.prototype.request).toBe('function');
    expect(Pool.prototype.request).toBe(undici.Dispatcher.prototype.request);
  });
});
