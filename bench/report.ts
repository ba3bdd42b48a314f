/**
 * The last line every benchmark prints:
 * `NAME: fhir-rte <value> <unit>; <peer or limit> <value> <unit>; ratio <r>`,
 * the ratio being fhir-rte's throughput over the other's (above 1: fhir-rte is ahead).
 */
export function report(name: string, ours: [string, number, string], theirs: [string, number, string]): void {
  const fmt = (v: number) => (v >= 100 ? Math.round(v).toString() : v.toFixed(2));
  const ratio = ours[1] / theirs[1];
  console.log(`${name}: ${ours[0]} ${fmt(ours[1])} ${ours[2]}; ${theirs[0]} ${fmt(theirs[1])} ${theirs[2]}; ratio ${ratio.toFixed(2)}`);
}
