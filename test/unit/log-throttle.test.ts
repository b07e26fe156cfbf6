import { strict as assert } from 'node:assert';
import { LogThrottle, withSuppressed } from '../../shim/src/util/log-throttle';

describe('log throttle', () => {
  it('lets a burst through, then about one line a second, and counts what it held back', () => {
    let now = 0;
    const throttle = new LogThrottle({ burst: 3, perSecond: 1, now: () => now });
    assert.deepEqual([throttle.admit(), throttle.admit(), throttle.admit()], [0, 0, 0]);
    for (let i = 0; i < 1000; i++) assert.equal(throttle.admit(), null);
    assert.equal(throttle.suppressed, 1000);
    now += 999;
    assert.equal(throttle.admit(), null);
    now += 1;
    assert.equal(throttle.admit(), 1001, 'the next line says how many were held back');
    assert.equal(throttle.admit(), null);
    now += 60_000;
    assert.deepEqual([throttle.admit(), throttle.admit(), throttle.admit(), throttle.admit()], [1, 0, 0, null], 'refills to the burst, no more');
  });

  it('adds suppressed=N to the fields only when lines were held back', () => {
    assert.deepEqual(withSuppressed({ a: 1 }, 0), { a: 1 });
    assert.deepEqual(withSuppressed({ a: 1 }, 5), { a: 1, suppressed: 5 });
    assert.deepEqual(withSuppressed(undefined, 2), { suppressed: 2 });
  });
});
