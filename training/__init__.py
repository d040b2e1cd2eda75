"""stedq.training: STED data (synthetic generator and real-data loader), QualityNet, training, evaluation."""
