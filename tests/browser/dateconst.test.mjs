// The date model on the page writes only valid calendar dates: its checkpoint declares the "iso_date"
// output constraint, so an input naming no real day still gives a real YYYY-MM-DD. A missing model file is a
// failure, never a skip.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPage, assertClean, shippedModels, assertModelFile, waitModel, setGenerate, generateAndWait } from './_harness.mjs';

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

// YYYY-MM-DD naming a real day of the proleptic Gregorian calendar, year 1000..2999.
function validIsoDate(s) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  const dim = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return y >= 1000 && y <= 2999 && mo >= 1 && mo <= 12 && d >= 1 && d <= dim[mo - 1];
}

test('the date model turns impossible dates into valid ones on the page', { timeout: 180_000 }, async () => {
  assert.ok(!validIsoDate('2021-04-31') && !validIsoDate('1900-02-29') && validIsoDate('2000-02-29'));
  const dates = shippedModels().find((m) => m.id === 'dates-encdec');
  assertModelFile(assert, dates.file);
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.click('#model-list button[data-model="dates-encdec"]');
    await waitModel(page, 'dates-encdec');
    for (const [input, month] of [['April 31, 2021', '2021-04-'], ['30 Feb 1900', '1900-02-']]) {
      await setGenerate(page, { prompt: input, temperature: 0, max: 12 });
      const out = await generateAndWait(page);
      console.log(`dates: ${JSON.stringify(input)} -> ${JSON.stringify(out.text)}`);
      assert.equal(out.state, 'done', out.error);
      assert.ok(validIsoDate(out.text), `${input} gave ${JSON.stringify(out.text)}, not a valid date`);
      assert.ok(out.text.startsWith(month), `${input} gave ${out.text}: year and month should survive`);
    }
    // a real date is untouched
    await setGenerate(page, { prompt: 'March 3, 2021', temperature: 0, max: 12 });
    assert.equal((await generateAndWait(page)).text, '2021-03-03');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
