/** A ChatSocket for the lifetime of a view, with its status as React state. */
import { useEffect, useState } from 'react';
import { ensureSession } from '../api/session';
import { chatSocketUrl } from './protocol';
import { ChatSocket, type SocketInfo } from './socket';

export function useChatSocket(): { socket: ChatSocket; info: SocketInfo } {
  const [socket] = useState(() => new ChatSocket({ url: chatSocketUrl(), reauthenticate: ensureSession }));
  const [info, setInfo] = useState<SocketInfo>(socket.state);
  useEffect(() => {
    const off = socket.onStatus(setInfo);
    socket.connect();
    return () => {
      off();
      socket.close();
    };
  }, [socket]);
  return { socket, info };
}
