"""Baseline registration methods (GradICON, VoxelMorph, classical), built on equireg's core."""
