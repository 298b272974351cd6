/** The operator token, kept for this browser tab only (sessionStorage). */
const KEY = 'loopchat.operatorToken';

export function loadToken(): string | null {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function saveToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage off: the token lives as long as the page
  }
}
