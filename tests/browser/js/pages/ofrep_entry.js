// The OFREP test page's script: the OpenFeature web SDK with the OFREP web provider,
// unmodified, against the proxy (another origin). The Python test drives it through
// window.crivlinePage and reads back what the SDK answered and when.

import { OpenFeature, ProviderEvents } from "@openfeature/web-sdk";
import { OFREPWebProvider } from "@openfeature/ofrep-web-provider";

const page = {
  // Changes on every load: the test checks it stays the same (no reload happened).
  loadId: `${Date.now()}-${Math.random().toString(36).slice(2)}`,
  events: [],
  ready: false,
  error: null,
  watched: null,
};
window.crivlinePage = page;

const client = OpenFeature.getClient();

function details(flag) {
  const getters = {
    boolean: (k, d) => client.getBooleanDetails(k, d),
    string: (k, d) => client.getStringDetails(k, d),
    number: (k, d) => client.getNumberDetails(k, d),
    object: (k, d) => client.getObjectDetails(k, d),
  };
  const got = getters[flag.type](flag.key, flag.default);
  return {
    key: got.flagKey,
    type: flag.type,
    value: got.value,
    variant: got.variant ?? null,
    reason: got.reason ?? null,
    errorCode: got.errorCode ?? null,
    errorMessage: got.errorMessage ?? null,
    flagMetadata: got.flagMetadata ?? {},
  };
}

for (const [name, kind] of [
  ["ready", ProviderEvents.Ready],
  ["changed", ProviderEvents.ConfigurationChanged],
  ["stale", ProviderEvents.Stale],
  ["error", ProviderEvents.Error],
]) {
  client.addHandler(kind, (event) => {
    const entry = { type: name, at: Date.now(), flags: event?.flagsChanged ?? [] };
    if (page.watched) entry.watched = details(page.watched);
    if (event?.message) entry.message = event.message;
    page.events.push(entry);
  });
}

// config: {baseUrl, clientKey, context, watch: {key, type, default}}
page.start = async (config) => {
  page.watched = config.watch ?? null;
  const provider = new OFREPWebProvider({
    baseUrl: config.baseUrl,
    headers: [["Authorization", `Bearer ${config.clientKey}`]],
    cacheMode: "disabled", // every answer comes from the proxy, not from localStorage
    changeDetection: "sse",
  });
  try {
    await OpenFeature.setContext(config.context);
    await OpenFeature.setProviderAndWait(provider);
    page.ready = true;
  } catch (err) {
    page.error = String(err);
  }
  return { ready: page.ready, status: client.providerStatus, error: page.error };
};

// flags: [{key, type, default}] -> the SDK's evaluation details for each
page.evaluate = (flags) => flags.map(details);

page.setContext = async (context) => {
  await OpenFeature.setContext(context);
  return client.providerStatus;
};
