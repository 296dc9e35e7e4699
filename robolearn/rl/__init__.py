"""RL fine-tuning of imitation-learned policies: vectorized rollouts, GAE, PPO over denoising chains
(ReinFlow for flow policies, DPPO for diffusion policies), critics and value-guided steering."""
