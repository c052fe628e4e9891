// Message ids: random, so that retries from any tab, node or reconnect can be
// recognised by the server and no two clients collide.

/** A fresh message id: 22 characters of URL-safe base64 from 128 random bits. */
export function messageId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
