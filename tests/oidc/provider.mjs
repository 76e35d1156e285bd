// A real OpenID provider for tests/test_oidc.py: node-oidc-provider with its built-in
// development login form (any login name and password; the login becomes `sub`).
//
// Configured by environment variables:
//   PROVIDER_CLIENT_ID, PROVIDER_CLIENT_SECRET, PROVIDER_REDIRECT_URI  the one client
//   PROVIDER_ACCOUNTS  JSON {login: {claim: value}}: claims of those logins besides `sub`;
//                      any other login gets preferred_username = its login
// It listens on a free port of 127.0.0.1, prints one JSON line {"issuer": "http://..."} on
// stdout once it answers, and exits when its stdin closes (the test process ended).
import http from 'node:http';

import Provider from 'oidc-provider';

const accounts = JSON.parse(process.env.PROVIDER_ACCOUNTS || '{}');

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: process.env.PROVIDER_CLIENT_ID,
        client_secret: process.env.PROVIDER_CLIENT_SECRET,
        redirect_uris: [process.env.PROVIDER_REDIRECT_URI],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    // The code flow without PKCE is refused: the app must send an S256 challenge.
    pkce: { methods: ['S256'], required: () => true },
    cookies: { keys: ['cratedigger-tests-only'] },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'] },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, sub) {
      const claims = { preferred_username: sub, name: sub, ...(accounts[sub] || {}) };
      return { accountId: sub, claims: async () => ({ ...claims, sub }) };
    },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
