/**
 * An undici interceptor that refuses a redirect hop to an origin the upstream
 * policy does not allow. It sits inside undici's redirect interceptor, which
 * dispatches every hop again with the same handler: the first dispatch of a
 * handler is the request feedlock chose (already allowed by its route), every
 * later one is a hop the upstream chose.
 */
import type { Dispatcher } from 'undici';
import { FeedlockError } from '../errors.js';
import type { UpstreamPolicy } from './upstream-policy.js';

type Dispatch = Dispatcher['dispatch'];

/** What a handler refused before any connection is told (nothing to pause or abort). */
const NO_CONNECTION: Dispatcher.DispatchController = {
  aborted: false,
  paused: false,
  reason: null,
  abort() {},
  pause() {},
  resume() {},
};

export function allowedOrigins(policy: UpstreamPolicy): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch: Dispatch): Dispatch => {
    const seen = new WeakSet<Dispatcher.DispatchHandler>();
    return (opts, handler) => {
      if (!seen.has(handler)) {
        seen.add(handler);
        return dispatch(opts, handler);
      }
      const next = new URL(opts.path, opts.origin ?? undefined);
      if (policy.isAllowed(next)) return dispatch(opts, handler);
      const err = new FeedlockError(
        'FL_FORBIDDEN_HOST',
        `upstream redirected to ${next.protocol}//${next.host}, which is not an allowed host`,
        {
          location: String(next),
        },
      );
      queueMicrotask(() => handler.onResponseError?.(NO_CONNECTION, err));
      return true;
    };
  };
}
