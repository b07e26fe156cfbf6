// A container's writable disk size (task/writable-disk.ts): the config's, or its annotation's
// within bounds; a bad annotation is InvalidArgument naming it. And the config keys that size
// disks and console logs.
import * as assert from 'node:assert/strict';
import { DEFAULT_CONFIG, parseConfig } from '../../shim/src/config/config';
import { Code, RpcError } from '../../shim/src/errdefs';
import { WRITABLE_DISK_ANNOTATION, writableDiskBytes } from '../../shim/src/task/writable-disk';

const MiB = 1024 * 1024;

describe('writable disk size', () => {
  const sizing = { defaultBytes: 1024 * MiB, maxBytes: 4096 * MiB };

  it('is the config size without the annotation, the annotation size with it', () => {
    assert.equal(writableDiskBytes(undefined, sizing, 'container c'), 1024 * MiB);
    assert.equal(writableDiskBytes({ other: '1' }, sizing, 'container c'), 1024 * MiB);
    assert.equal(writableDiskBytes({ [WRITABLE_DISK_ANNOTATION]: '64' }, sizing, 'container c'), 64 * MiB);
    assert.equal(writableDiskBytes({ [WRITABLE_DISK_ANNOTATION]: '4096' }, sizing, 'container c'), 4096 * MiB);
  });

  it('refuses a bad annotation with InvalidArgument naming it', () => {
    for (const bad of ['', 'abc', '-1', '1.5', '0x40', ' 64', '64M', '1e3', '15', '0', '4097', '99999999999999']) {
      assert.throws(() => writableDiskBytes({ [WRITABLE_DISK_ANNOTATION]: bad }, sizing, 'container c'), (err: unknown) => {
        assert.ok(err instanceof RpcError && err.code === Code.InvalidArgument, String(err));
        assert.match(err.message, new RegExp(`container c: annotation ${WRITABLE_DISK_ANNOTATION.replace(/\./g, '\\.')}=`));
        return true;
      }, JSON.stringify(bad));
    }
  });

  it('config: writable_disk_mib, writable_disk_max_mib and console_log_max_kib, checked', () => {
    assert.equal(DEFAULT_CONFIG.consoleLogMaxKiB, 1024);
    const c = parseConfig('writable_disk_mib = 512\nwritable_disk_max_mib = 2048\nconsole_log_max_kib = 64\n', 'c.toml');
    assert.deepEqual([c.writableDiskMiB, c.writableDiskMaxMiB, c.consoleLogMaxKiB], [512, 2048, 64]);
    // Unset, the ceiling is never below the default size itself.
    assert.equal(parseConfig('writable_disk_mib = 32768\n', 'c.toml').writableDiskMaxMiB, 32768);
    assert.throws(() => parseConfig('writable_disk_mib = 8\n', 'c.toml'), /c\.toml: writable_disk_mib must be an integer from 16/);
    assert.throws(() => parseConfig('writable_disk_mib = 512\nwritable_disk_max_mib = 256\n', 'c.toml'), /writable_disk_max_mib \(256\) is less than writable_disk_mib \(512\)/);
    assert.throws(() => parseConfig('console_log_max_kib = 4\n', 'c.toml'), /console_log_max_kib must be an integer from 8/);
  });
});
