// The official `openai` npm client against a running moeserve coordinator's
// OpenAI-compatible HTTP API (tests/integration/openai_api_test.cc starts it).
//
//   node openai_client_test.mjs GROUP
//
// Environment: MOESERVE_NODE_MODULES (where tools/setup.sh installed openai),
// OPENAI_BASE_URL (http://127.0.0.1:PORT/v1), OPENAI_API_KEY, MOESERVE_MODEL
// (the served model's name), MOESERVE_METRICS_URL (the coordinator's
// /metrics). GROUP: basics, stream, n, logprobs, errors, abort. Prints one
// line per check and exits 1 when any failed.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.MOESERVE_NODE_MODULES, 'noop.js'));
const openaiModule = require('openai');
const OpenAI = openaiModule.OpenAI ?? openaiModule.default ?? openaiModule;

const model = process.env.MOESERVE_MODEL;
// No retries: a 429 or 503 must reach the test, not be retried away.
const client = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL,
                            apiKey: process.env.OPENAI_API_KEY, maxRetries: 0, timeout: 60000 });

// Greedy and blind to end-of-sequence, so that runs can be compared.
const greedy = { model, temperature: 0, max_tokens: 8, ignore_eos: true };
const hello = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }];

async function metric(name, labels) {
  const text = await (await fetch(process.env.MOESERVE_METRICS_URL)).text();
  const re = new RegExp(`^${name}${labels ? `\\{${labels}\\}` : ''} ([0-9.e+-]+)$`, 'm');
  const m = text.match(re);
  return m ? Number(m[1]) : 0;
}

async function waitFor(what, condition, seconds = 30) {
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function expectError(status, promise, check) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `expected an APIError, got ${e}`);
    assert.equal(e.status, status, `status of ${JSON.stringify(e.error)}`);
    check?.(e);
    return e;
  }
  assert.fail(`expected HTTP ${status}, the request succeeded`);
}

const groups = {
  async basics() {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [model]);
    assert.equal((await client.models.retrieve(model)).id, model);

    const chat = await client.chat.completions.create({ ...greedy, messages: hello, user: 'u1' });
    assert.equal(chat.object, 'chat.completion');
    assert.equal(chat.model, model);
    assert.match(chat.id, /^chatcmpl-/);
    assert.equal(chat.choices.length, 1);
    assert.equal(chat.choices[0].message.role, 'assistant');
    assert.equal(typeof chat.choices[0].message.content, 'string');
    assert.ok(chat.choices[0].message.content.length > 0);
    assert.equal(chat.choices[0].finish_reason, 'length');
    assert.equal(chat.usage.completion_tokens, 8);
    assert.ok(chat.usage.prompt_tokens > 5);
    assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + 8);
    const again = await client.chat.completions.create({ ...greedy, messages: hello });
    assert.equal(again.choices[0].message.content, chat.choices[0].message.content);

    // max_completion_tokens, and the newer name wins.
    const short = await client.chat.completions.create(
      { ...greedy, messages: hello, max_tokens: 8, max_completion_tokens: 3 });
    assert.equal(short.usage.completion_tokens, 3);

    // Tools reach the template, and so does a conversation with a call and its result.
    const weather = { type: 'function', function: { name: 'get_weather', description: 'Weather',
                      parameters: { type: 'object', properties: { city: { type: 'string' } } } } };
    const withTools = await client.chat.completions.create(
      { ...greedy, messages: hello, tools: [weather], tool_choice: 'auto' });
    assert.equal(withTools.choices[0].message.role, 'assistant');
    const history = [...hello,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '21 degrees' }];
    const afterCall = await client.chat.completions.create(
      { ...greedy, messages: history, tools: [weather] });
    assert.ok(afterCall.usage.prompt_tokens > chat.usage.prompt_tokens + 10,
              `${afterCall.usage.prompt_tokens} prompt tokens with the call rendered`);

    const text = await client.completions.create({ ...greedy, prompt: 'The capital of France is' });
    assert.equal(text.object, 'text_completion');
    assert.equal(typeof text.choices[0].text, 'string');
    assert.equal(text.usage.completion_tokens, 8);
    const ids = await client.completions.create({ ...greedy, prompt: [0, 17, 42], max_tokens: 4 });
    assert.equal(ids.usage.prompt_tokens, 3);
    assert.equal(ids.usage.completion_tokens, 4);
    // A stop string ends the text before it; sampling fields are accepted.
    const first = ids.choices[0].text;
    const sampled = await client.completions.create({
      ...greedy, prompt: [0, 17, 42], max_tokens: 4, seed: 3, top_p: 0.9, top_k: 5, min_p: 0.01,
      presence_penalty: 0.5, frequency_penalty: 0.5, repetition_penalty: 1.1,
      logit_bias: { 17: -100 }, stop: ['\u0000never'] });
    assert.equal(sampled.choices.length, 1);
    // The first printable ASCII character after the start, as a stop string.
    const at = [...first].findIndex((c, i) => i > 0 && /^[!-~]$/.test(c));
    if (at > 0) {
      const stop = [...first][at];
      const cut = await client.completions.create({ ...greedy, prompt: [0, 17, 42], max_tokens: 4,
                                                    stop });
      assert.equal(cut.choices[0].text, first.slice(0, first.indexOf(stop)));
      assert.equal(cut.choices[0].finish_reason, 'stop');
    }
  },

  async stream() {
    const whole = await client.chat.completions.create({ ...greedy, messages: hello });
    const stream = await client.chat.completions.create(
      { ...greedy, messages: hello, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish = null;
    let usage = null;
    let role = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      if (chunk.choices.length === 0) continue;
      role ??= chunk.choices[0].delta.role;
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    assert.ok(chunks >= 3, `${chunks} chunks`);
    assert.equal(role, 'assistant');
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, 'length');
    assert.deepEqual({ p: usage.prompt_tokens, c: usage.completion_tokens },
                     { p: whole.usage.prompt_tokens, c: 8 });

    const completion = await client.completions.create(
      { ...greedy, prompt: 'Once upon a time', stream: true });
    let streamed = '';
    for await (const chunk of completion) streamed += chunk.choices[0]?.text ?? '';
    const plain = await client.completions.create({ ...greedy, prompt: 'Once upon a time' });
    assert.equal(streamed, plain.choices[0].text);
  },

  async n() {
    const one = await client.chat.completions.create({ ...greedy, messages: hello });
    const three = await client.chat.completions.create(
      { ...greedy, messages: hello, n: 3, temperature: 1, seed: 11 });
    assert.deepEqual(three.choices.map((c) => c.index), [0, 1, 2]);
    assert.equal(three.usage.completion_tokens, 24);
    assert.equal(three.usage.prompt_tokens, one.usage.prompt_tokens);  // counted once
    const again = await client.chat.completions.create(
      { ...greedy, messages: hello, n: 3, temperature: 1, seed: 11 });
    assert.deepEqual(again.choices.map((c) => c.message.content),
                     three.choices.map((c) => c.message.content));  // seeded
    const stream = await client.chat.completions.create(
      { ...greedy, messages: hello, n: 2, stream: true });
    const texts = ['', ''];
    const finished = [null, null];
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        texts[c.index] += c.delta.content ?? '';
        finished[c.index] = c.finish_reason ?? finished[c.index];
      }
    }
    // Greedy samples of one prompt are the same text.
    assert.deepEqual(texts, [one.choices[0].message.content, one.choices[0].message.content]);
    assert.deepEqual(finished, ['length', 'length']);
    // The samples of a prompt share its KV: the later ones find its full
    // blocks in the prefix cache (this prompt is new to the server).
    const long = [{ role: 'user', content: 'sharing '.repeat(200) }];
    const shared = await client.chat.completions.create({ ...greedy, messages: long, n: 3 });
    assert.ok(shared.usage.prompt_tokens > 128, `${shared.usage.prompt_tokens} prompt tokens`);
    assert.ok(shared.usage.prompt_tokens_details.cached_tokens >= 64,
              JSON.stringify(shared.usage));
    const batch = await client.completions.create({ ...greedy, prompt: ['a b', 'c d'], n: 2 });
    assert.deepEqual(batch.choices.map((c) => c.index), [0, 1, 2, 3]);
    assert.equal(batch.usage.completion_tokens, 32);
  },

  async logprobs() {
    const chat = await client.chat.completions.create(
      { ...greedy, messages: hello, logprobs: true, top_logprobs: 2 });
    const content = chat.choices[0].logprobs.content;
    assert.equal(content.length, 8);
    let joined = '';
    for (const entry of content) {
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 2);
      // Greedy: the chosen token is the most likely one.
      assert.equal(entry.token, entry.top_logprobs[0].token);
      assert.ok(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob);
      assert.deepEqual(entry.bytes, [...Buffer.from(entry.token, 'utf8')]);
      joined += entry.token;
    }
    assert.ok(joined.length > 0);
    const none = await client.chat.completions.create({ ...greedy, messages: hello });
    assert.equal(none.choices[0].logprobs, null);
    const only = await client.chat.completions.create({ ...greedy, messages: hello, logprobs: true });
    assert.equal(only.choices[0].logprobs.content[0].top_logprobs.length, 0);

    const text = await client.completions.create({ ...greedy, prompt: 'Hi', logprobs: 3 });
    const lp = text.choices[0].logprobs;
    assert.equal(lp.tokens.length, 8);
    assert.equal(lp.token_logprobs.length, 8);
    assert.equal(Object.keys(lp.top_logprobs[0]).length >= 1, true);
    assert.equal(lp.text_offset[0], 0);

    const stream = await client.chat.completions.create(
      { ...greedy, messages: hello, logprobs: true, top_logprobs: 1, stream: true });
    let entries = 0;
    for await (const chunk of stream) entries += chunk.choices[0]?.logprobs?.content?.length ?? 0;
    assert.equal(entries, 8);
  },

  async errors() {
    await expectError(400, client.chat.completions.create(
      { ...greedy, messages: hello, temperature: -1 }), (e) => {
      assert.equal(e.error.param, 'temperature');
      assert.match(e.message, /sampling\.temperature must be a finite number >= 0, got -1/);
      assert.equal(e.error.type, 'invalid_request_error');
    });
    await expectError(400, client.chat.completions.create(
      { ...greedy, messages: hello, temperature: 'hot' }), (e) => {
      assert.equal(e.error.param, 'temperature');
      assert.match(e.message, /temperature must be a number, got a string/);
    });
    await expectError(400, client.chat.completions.create(
      { ...greedy, messages: hello, max_tokens: 100000000 }), (e) => {
      assert.equal(e.error.param, 'max_tokens');
      assert.match(e.message, /exceeds the/);
    });
    await expectError(400, client.chat.completions.create(
      { ...greedy, messages: hello, tool_choice: 'required',
        tools: [{ type: 'function', function: { name: 'f' } }] }),
                      (e) => assert.equal(e.error.param, 'tool_choice'));
    await expectError(400, client.chat.completions.create({ ...greedy, messages: [] }),
                      (e) => assert.match(e.message, /messages is empty/));
    await expectError(400, client.completions.create({ ...greedy, prompt: [0, 99999999] }),
                      (e) => assert.match(e.message, /outside the vocabulary/));
    await expectError(404, client.chat.completions.create(
      { ...greedy, model: 'no-such-model', messages: hello }), (e) => {
      assert.equal(e.error.code, 'model_not_found');
      assert.equal(e.error.param, 'model');
    });
    const raw = await fetch(`${process.env.OPENAI_BASE_URL}/no/such/route`,
                            { headers: { Authorization: `Bearer ${process.env.OPENAI_API_KEY}` } });
    assert.equal(raw.status, 404);
    const body = await raw.json();
    assert.deepEqual(Object.keys(body.error), ['message', 'type', 'param', 'code']);
    const bad = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: 'wrong', maxRetries: 0 });
    await expectError(401, bad.chat.completions.create({ ...greedy, messages: hello }),
                      (e) => assert.equal(e.error.code, 'invalid_api_key'));
    await expectError(401, bad.models.list());
    // Still serving after all that.
    const ok = await client.chat.completions.create({ ...greedy, messages: hello });
    assert.equal(ok.usage.completion_tokens, 8);
  },

  async abort() {
    const aborted = () => metric('moeserve_requests_finished_total', 'finish_reason="abort"');
    const before = await aborted();
    // A stream that would run for thousands of tokens, aborted after a few.
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { ...greedy, messages: hello, max_tokens: 3000, stream: true },
      { signal: controller.signal });
    let chunks = 0;
    try {
      // The client's stream ends (or throws an abort error) once aborted.
      for await (const chunk of stream) {
        if (++chunks === 3) controller.abort();
      }
    } catch (e) {
      if (!(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError')) throw e;
    }
    assert.ok(chunks >= 3 && chunks < 100, `${chunks} chunks`);
    await waitFor('the aborted stream to be cancelled', async () => (await aborted()) >= before + 1);

    // A request that is not streamed: the client leaves while it runs.
    const quiet = new AbortController();
    const pending = client.completions.create(
      { ...greedy, prompt: 'Count:', max_tokens: 3000 }, { signal: quiet.signal });
    await waitFor('the request to run', async () => (await metric('moeserve_requests_running')) >= 1);
    quiet.abort();
    await assert.rejects(pending);
    await waitFor('the abandoned request to be cancelled',
                  async () => (await aborted()) >= before + 2);
    await waitFor('nothing to run', async () => (await metric('moeserve_requests_running')) === 0);
    const ok = await client.chat.completions.create({ ...greedy, messages: hello });
    assert.equal(ok.choices[0].finish_reason, 'length');
  },
};

const group = process.argv[2];
if (!groups[group]) {
  console.error(`unknown group ${group}; one of ${Object.keys(groups).join(', ')}`);
  process.exit(2);
}
try {
  await groups[group]();
  console.log(`ok ${group}`);
} catch (e) {
  console.log(`FAIL ${group}: ${e.stack ?? e}`);
  process.exit(1);
}
