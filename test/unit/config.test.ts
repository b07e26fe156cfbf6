import * as assert from 'node:assert/strict';
import { DEFAULT_CONFIG, loadConfig, parseConfig } from '../../shim/src/config/config';
import { parseToml } from '../../shim/src/config/toml';

describe('config', () => {
  it('parses the TOML subset smolvm uses', () => {
    const t = parseToml('# c\na = "x" # trailing\nb = 3\nc = true\nd = [1, "two"]\n[t.u]\ne = 1.5\n');
    assert.deepEqual(t, { a: 'x', b: 3, c: true, d: [1, 'two'], t: { u: { e: 1.5 } } });
  });

  it('names the line of a syntax error', () => {
    assert.throws(() => parseToml('a = 1\nb = "open\n', 'f.toml'), /f\.toml:2: unterminated string/);
    assert.throws(() => parseToml('a = 1\na = 2\n', 'f.toml'), /f\.toml:2: duplicate key a/);
  });

  it('applies values over defaults and rejects unknown keys and bad types', () => {
    const c = parseConfig('backend = "tcg"\nmemory_mib = 512\n', 'c.toml');
    assert.equal(c.backend, 'tcg');
    assert.equal(c.memoryMiB, 512);
    assert.equal(c.vcpus, DEFAULT_CONFIG.vcpus);
    assert.throws(() => parseConfig('memroy_mib = 1\n', 'c.toml'), /unknown key memroy_mib/);
    assert.throws(() => parseConfig('backend = "xen"\n', 'c.toml'), /backend must be/);
    assert.throws(() => parseConfig('vcpus = 0\n', 'c.toml'), /vcpus must be a positive integer/);
  });

  it('uses defaults when the default file is absent, but an explicit path must exist', () => {
    assert.deepEqual(loadConfig(undefined, { SMOLVM_CONFIG: '' }), DEFAULT_CONFIG);
    assert.throws(() => loadConfig('/nonexistent/smolvm.toml', {}), /cannot read smolvm config \/nonexistent\/smolvm.toml/);
  });
});
