// The OpenFeature Node server SDK with @openfeature/ofrep-provider, unmodified, against the
// proxy. Reads {baseUrl, key, flags: [{key, type, default}], contexts: [...]} as JSON on
// stdin; prints one JSON array: every flag evaluated in every context, as the SDK saw it.

import { OpenFeature } from "@openfeature/server-sdk";
import { OFREPProvider } from "@openfeature/ofrep-provider";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const config = await readStdin();
await OpenFeature.setProviderAndWait(
  new OFREPProvider({
    baseUrl: config.baseUrl,
    headers: [["Authorization", `Bearer ${config.key}`]],
    timeoutMs: 5000,
  }),
);
const client = OpenFeature.getClient();
const getters = {
  boolean: (k, d, c) => client.getBooleanDetails(k, d, c),
  string: (k, d, c) => client.getStringDetails(k, d, c),
  number: (k, d, c) => client.getNumberDetails(k, d, c),
  object: (k, d, c) => client.getObjectDetails(k, d, c),
};

const results = [];
for (const flag of config.flags) {
  for (const [index, context] of config.contexts.entries()) {
    const got = await getters[flag.type](flag.key, flag.default, context);
    results.push({
      key: got.flagKey,
      type: flag.type,
      context: index,
      value: got.value,
      variant: got.variant ?? null,
      reason: got.reason ?? null,
      errorCode: got.errorCode ?? null,
      errorMessage: got.errorMessage ?? null,
    });
  }
}
await OpenFeature.close();
process.stdout.write(JSON.stringify(results) + "\n");
