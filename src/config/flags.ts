/**
 * The command-line flags of the config keys, generated from CONFIG_FIELDS:
 * the flag names, their help and the defaults they show. Commander gets no
 * default values: a flag not given must leave the config file's value alone.
 */
import { Option, type Command } from 'commander';
import { CONFIG_FIELDS, type ConfigKey, type FlagSpec } from './schema.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

interface Flagged {
  key: ConfigKey;
  flag: FlagSpec;
  default?: unknown;
  defaultDoc?: string;
}

const FLAGGED: Flagged[] = Object.entries(CONFIG_FIELDS).flatMap(([key, f]) =>
  f.flag ? [{ ...f, key: key as ConfigKey, flag: f.flag }] : [],
);

/** "3142", "127.0.0.1", "$DL_DIR/feedlock, else ./downloads"; undefined when there is nothing to say. */
function defaultText(f: Flagged): string | undefined {
  if (f.defaultDoc) return f.defaultDoc.startsWith('none') ? undefined : f.defaultDoc.replace(/`/g, '');
  if (typeof f.default === 'number' || (typeof f.default === 'string' && f.default)) return String(f.default);
  return undefined;
}

function optionOf(f: Flagged): Option {
  const shownDefault = f.flag.flags.startsWith('--no-') ? undefined : defaultText(f);
  const help = `${f.flag.help}${f.flag.repeatable ? ' (repeatable)' : ''}${shownDefault ? ` (default ${shownDefault})` : ''}`;
  const option = new Option(f.flag.flags, help);
  return f.flag.repeatable ? option.argParser(collect) : option;
}

/** Adds the flags of every config key in `scope` to `cmd`. */
export function addConfigFlags(cmd: Command, scope: FlagSpec['scope']): Command {
  for (const f of FLAGGED) if (f.flag.scope === scope) cmd.addOption(optionOf(f));
  return cmd;
}

/** Maps commander's option object to config keys (undefined = not given). */
export function flagsToConfig(opts: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of FLAGGED) {
    const option = optionOf(f);
    const value = opts[option.attributeName()];
    // commander sets a --no-X flag's value to true when it is not given.
    out[f.key] = option.negate ? (value === false ? false : undefined) : value;
  }
  return out;
}

/** `--port N`, `--mirror NAME=URL (repeatable)`: a flag as the README writes it. */
export function flagDoc(flag: FlagSpec): string {
  const shown = flag.flags.replace(/<([^>]+)>/, (_, v: string) => v.toUpperCase());
  return `\`${shown}\`${flag.repeatable ? ' (repeatable)' : ''}`;
}
