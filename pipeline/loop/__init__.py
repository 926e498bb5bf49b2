"""The loops: training (train), inference, stage 1 (pretrain), stage-2 cycles (cycle, steps, poolpass) and the arms of a seed (arms)."""
