/** Index parsing benchmarks at real size (filled in with the snapshot layer). */
export async function benchIndices(): Promise<{ figure: string; direct: number | string; feedlock: number | string; ratio: number | string; unit: string }[]> {
  return [];
}
