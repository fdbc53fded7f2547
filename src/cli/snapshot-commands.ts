import type { Command } from 'commander';

export function registerSnapshotCommands(_program: Command): void {}
