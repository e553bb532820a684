"""Your own photos in class folders (seed 000's next step), fine-tuned from ImageNet weights:
MobileNetV3-Large at 224 px, a stratified fifth of the photos held out for evaluation.

  photos/train/<class name>/*.jpg      (any of jpg, jpeg, png, bmp, gif, webp, tif; any size or orientation)

  python -m lightcls.data.preview --config=configs/own_photos.py --config.data.data_dir=photos
  python -m lightcls.main --config=configs/own_photos.py --workdir=runs/own_photos \\
      --config.data.data_dir=photos --config.init.checkpoint=mobilenetv3_large_100.pth

With a photos/test/ folder as well, set --config.data.val_fraction=0 to evaluate on it instead. Unreadable
files are skipped and listed in runs/own_photos/data_report.json. Without `init.checkpoint` the model starts
from random weights, which needs far more photos.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.source = 'folder'
  config.data.val_fraction = 0.2
  config.data.image_size = 224
  config.data.train_resize = 'stretch'
  config.data.eval_resize = 'center_crop'     # whole photos, aspect ratio kept, as a phone app would crop
  config.augment.order = ('resized_crop', 'hflip', 'color_jitter')
  config.augment.resized_crop.scale = (0.5, 1.0)
  config.augment.color_jitter.update(brightness=0.2, contrast=0.2, saturation=0.2)
  config.model.name = 'mobilenet_v3_large'
  config.init.reference = 'mobilenetv3_large_100'  # the timm model the weights file belongs to
  config.optimizer.lr = 1e-3
  config.optimizer.weight_decay = 0.01
  config.train.batch_size = 32
  config.train.total_epochs = 15.0
  config.schedule.milestones_epochs = (10,)
  config.loss.label_smoothing = 0.1
  return config
