import { BlockList, isIP } from 'node:net';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether `address` (an IP literal) is a loopback address: 127.0.0.0/8 or ::1, in any IPv6 spelling. */
export function isLoopbackAddress(address: string): boolean {
  const family = isIP(address);
  // `::ffff:127.0.0.1` (IPv4-mapped) is checked as IPv6; BlockList maps it onto the IPv4 subnet.
  return family !== 0 && LOOPBACK.check(address, family === 6 ? 'ipv6' : 'ipv4');
}
