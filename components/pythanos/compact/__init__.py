"""``pythanos compact``: the compactor (compaction, vertical de-duplication, downsampling,
retention and cleanup of a bucket). The work itself is :mod:`pythanos.block.compactor`; this
package holds the flags and the process around it."""
